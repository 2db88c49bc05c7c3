"""docs/api.md stays true to the app: its route index names every route the daemon serves."""

from pathlib import Path

from qwend.api.wire.lmstudio import help_body
from qwend.app import create_app
from qwend.settings import Settings

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_every_route_is_in_the_index():
    app = create_app(Settings(_env_file=None))
    served = help_body(app.routes, name="", version="", description="")["endpoints"]
    doc = API_DOC.read_text()
    missing = [f"{e['method']} {e['path']}" for entries in served.values() for e in entries
               if f"`{e['method'].replace('WEBSOCKET', 'WS')} {e['path']}`" not in doc]
    assert not missing, f"docs/api.md's route index lacks: {missing}"
