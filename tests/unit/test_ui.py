"""The browser UI's static files at /ui: served with a strict Content-Security-Policy, open without an API key
(the page asks for one when the API answers 401), and shipped in the package. The page itself is tested in a
real browser by tests/real/test_ui_browser.py."""

import re

from qwend.api.ui import CSP, WEB
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


def test_the_page_and_its_vendored_libraries_are_in_the_package():
    names = {p.relative_to(WEB).as_posix() for p in WEB.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert {"index.html", "app.js", "api.js", "render.js", "style.css", "vendor/marked.min.js",
            "vendor/purify.min.js", "vendor/highlight.min.js", "vendor/highlight-github.min.css"} <= names
    assert {"vendor/LICENSE.marked.md", "vendor/LICENSE.dompurify", "vendor/LICENSE.highlightjs"} <= names
    html = (WEB / "index.html").read_text()
    # the CSP forbids inline code and styles: every script is a file, and no element carries a style
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html and " on" + "click=" not in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("data:") or (WEB / src).is_file(), src


async def test_ui_is_served_with_a_strict_csp_and_no_key(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(replies=["x"]), api_keys=["secret"])
    async with client_for(runtime) as client:
        redirect = await client.get("/ui")
        assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/ui/")
        page = await client.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="app.js"' in page.text
        csp = page.headers["content-security-policy"]
        assert csp == CSP and "default-src 'self'" in csp and "img-src 'self' data:" in csp
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        script = await client.get("/ui/vendor/purify.min.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == CSP
        assert (await client.get("/ui/nope.js")).status_code == 404
        # the guard opens every path under /ui/ without a key: nothing outside qwend/web may be reached that way
        for escape in ("/ui/..%2F..%2Fpyproject.toml", "/ui/..%2Fapi%2Fui.py", "/ui/%2E%2E/__init__.py"):
            assert (await client.get(escape)).status_code == 404, escape
        # the page's API calls still need the key
        assert (await client.get("/v1/sessions")).status_code == 401
        keyed = await client.get("/v1/sessions", headers={"Authorization": "Bearer secret"})
        assert keyed.status_code == 200


async def test_the_help_listing_survives_the_mount(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(replies=["x"]))
    async with client_for(runtime) as client:
        reply = await client.get("/help")
    assert reply.status_code == 200, reply.text
