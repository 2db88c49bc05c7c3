"""`qwend bench drafts`' table: each figure with its ratio to the same server without speculation, and qwend's
to llama-server's same kind (the servers themselves run in `qwend bench drafts`, never in CI)."""

from rich.console import Console

from qwend.cli.bench_drafts import _table


def test_ratios_are_to_the_same_server_without_and_to_the_peers_same_kind():
    figures = {"qwend n-gram": (60.0, 30.0), "qwend": (20.0, 30.0), "qwend n-gram + draft model": (30.0, 15.0),
               "llama-server": (25.0, 30.0), "llama-server n-gram": (50.0, 30.0),
               "llama-server draft model": (20.0, 20.0)}
    console = Console(record=True, width=200)
    _table(figures, "a pairing", console)
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in console.export_text().splitlines() if line.startswith("│")}
    assert rows["qwend n-gram"] == ["60.0", "30.0", "3.00, 1.00", "1.20, 1.00"]
    assert rows["qwend n-gram + draft model"] == ["30.0", "15.0", "1.50, 0.50", "1.50, 0.75"]
    assert rows["llama-server draft model"] == ["20.0", "20.0", "0.80, 0.67", ""]
