"""The `qwend` command and what only it uses: benchmarks, evaluations, the terminal chat and the daemons it
starts in a thread or a process of their own. Nothing in the daemon imports from here."""

from qwend.cli.main import main

__all__ = ["main"]
