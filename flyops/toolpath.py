"""Tools installed into this virtualenv come first on PATH for processes started here.

`scripts/setup` puts Debian 13's restic in `.venv/bin` when the system's is older than 0.17
(Debian 12's 0.14 hashes with a generic SHA-256: fetches 3.2x slower, bench/results/restic.md).
`.venv/bin/inv` does not put `.venv/bin` on PATH by itself, so the entry points (tasks.py, the
tests, the benchmarks) call `prefer_venv_tools()` once. Scripts run over SSH (`--on`) use the
remote machine's own PATH.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def venv_bin() -> Path | None:
    """The running virtualenv's bin folder, or None outside a virtualenv."""
    if sys.prefix == sys.base_prefix:
        return None
    return Path(sys.prefix) / "bin"


def prefer_venv_tools(environ: dict[str, str] | None = None) -> None:
    """Put the virtualenv's bin folder first on PATH (once; idempotent)."""
    env = os.environ if environ is None else environ
    folder = venv_bin()
    if folder is None or not folder.is_dir():
        return
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    if parts and parts[0] == str(folder):
        return
    env["PATH"] = os.pathsep.join([str(folder), *(p for p in parts if p != str(folder))])
