"""`qwend bench drafts`: speculation on a model and its draft model (the 1.5B and the 0.5B by default), qwend
against llama-server, in one run: each server without speculation, with n-gram drafts, and with the draft model.

Both servers are separate processes on the same GGUF files and threads, driven through the OpenAI streaming
API with greedy requests (bench_peers.py); each figure prints with its ratio to the same server without
speculation, and qwend's to llama-server's.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from rich.console import Console
from rich.table import Table

from qwend.cli.bench_peers import CONTEXT, Peer, Server, _decode, _edit, _llama_server_binary, _running
from qwend.models.store import ModelStore
from qwend.settings import Settings

WORKLOADS = ("code edit", "open-ended")


def run_drafts_bench(settings: Settings, *, draft: str | None, threads: int, console: Console) -> None:
    store = ModelStore(settings.store_dir, settings.models_dir)
    target = store.find(settings.model)
    draft = draft or (target.entry.draft if target.entry else None)
    if draft is None:
        raise RuntimeError(f"{target.name} has no draft model in the catalog: name one with --draft")
    drafter = store.find(draft)
    binary = _llama_server_binary(console)
    common = ["-m", str(target.path), "-c", str(CONTEXT), "-np", "8", "--kv-unified", "--jinja", "-t", str(threads),
              "--host", "127.0.0.1"]
    kv = tempfile.mkdtemp(prefix="qwend-bench-kv-")
    env = {**os.environ, "QWEND_THREADS": str(threads), "QWEND_CONTEXT_LENGTH": str(CONTEXT), "QWEND_KV_CACHE_DIR": kv}
    qwend = [sys.executable, "-m", "qwend", "serve", "--model", target.name, "--host", "127.0.0.1"]
    servers = [  # (server, label, the request fields that switch speculation off on it, else None)
        (Server("qwend", qwend, {**env, "QWEND_DRAFT_MODEL": "none"}), "qwend n-gram", {"draft_max": 0}),
        (Server("qwend", qwend, {**env, "QWEND_DRAFT_MODEL": drafter.name}), "qwend n-gram + draft model", None),
        (Server("llama-server", [str(binary), *common]), "llama-server", None),
        (Server("llama-server", [str(binary), *common, "--spec-type", "ngram-simple"]), "llama-server n-gram", None),
        (Server("llama-server", [str(binary), *common, "-md", str(drafter.path)]), "llama-server draft model", None),
    ]
    figures: dict[str, tuple[float, float]] = {}
    try:
        for server, label, plain in servers:
            with _running(server, target.name, console) as peer:
                figures[label] = (_edit(peer), _decode(peer))
                if plain is not None:
                    off = Peer(peer.base, peer.model, plain)
                    figures["qwend"] = (_edit(off), _decode(off))
            console.print(f"  {label}: code edit {figures[label][0]:.1f} tok/s, open-ended {figures[label][1]:.1f} tok/s")
    finally:
        shutil.rmtree(kv, ignore_errors=True)
    _table(figures, f"{target.name}, drafted for by {drafter.name}", console)


def _table(figures: dict[str, tuple[float, float]], title: str, console: Console) -> None:
    table = Table(title=f"qwend bench drafts: {title}; greedy tok/s, and ratios (> 1: faster)")
    for column in ("speculation", *WORKLOADS, "vs itself without", "vs llama-server's"):
        table.add_column(column, justify="right")
    peers = {"qwend n-gram": "llama-server n-gram", "qwend n-gram + draft model": "llama-server draft model"}
    for label, (edit, decode) in figures.items():
        base = figures["qwend" if label.startswith("qwend") else "llama-server"]
        theirs = figures.get(peers.get(label, ""))
        table.add_row(label, f"{edit:.1f}", f"{decode:.1f}",
                      f"{edit / base[0]:.2f}, {decode / base[1]:.2f}",
                      f"{edit / theirs[0]:.2f}, {decode / theirs[1]:.2f}" if theirs else "")
    console.print(table)
