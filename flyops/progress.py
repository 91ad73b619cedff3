"""Progress of long work (backups, restores, drills) on a terminal: phases and bytes.

The host scripts report as they go with lines on stderr,

    @flyops-progress phase=dump bytes=123456
    @flyops-progress fetched=98765
    @flyops-progress phase=schema

which `Host.run_script` takes out of the collected stderr (so error tails stay clean) and
hands to the host's `progress` callable while the script runs; Python code reports its own
phases through `report(host, phase=...)`. A `ProgressLine` shows the latest state as one
status line on stderr, the way restic and pg tools do on a terminal, and nothing at all with
`--json` or when stderr is not a terminal (cron mail, CI logs, pipes).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

MARK = "@flyops-progress "


def parse(line: str) -> dict[str, str]:
    """'@flyops-progress phase=dump bytes=12' -> {'phase': 'dump', 'bytes': '12'}."""
    out: dict[str, str] = {}
    for word in line[len(MARK):].split() if line.startswith(MARK) else []:
        k, sep, v = word.partition("=")
        if sep:
            out[k] = v
    return out


def split_stderr(text: str) -> tuple[str, list[str]]:
    """(stderr without progress lines, the progress lines)."""
    keep, marks = [], []
    for line in text.splitlines(keepends=True):
        (marks if line.startswith(MARK) else keep).append(line)
    return "".join(keep), [m.rstrip("\n") for m in marks]


def report(host: Any, **fields: Any) -> None:
    """A phase (or any fields) from Python code, to the host's progress callable if it has one."""
    cb = getattr(host, "progress", None)
    if cb is not None:
        cb(MARK + " ".join(f"{k}={v}" for k, v in fields.items()))


PHASE_TEXT = {
    "lock": "taking the repository lock",
    "dump": "dumping",
    "manifest": "storing the manifest",
    "fetch": "fetching",
    "toc": "reading the table of contents",
    "schema": "creating the schema",
    "data": "loading data",
    "post": "building indexes and constraints",
    "analyze": "ANALYZE",
    "swap": "swapping the databases",
    "select": "choosing the backup",
    "provision": "starting the scratch server",
    "restore": "restoring",
    "verify": "verifying",
    "teardown": "removing the scratch server",
}


class ProgressLine:
    """A status line on stderr: '<title>: <phase> · <bytes> · <seconds>'. Callable with a
    progress line (the host's `progress`). `enabled=False` makes it do nothing."""

    def __init__(self, title: str, *, enabled: bool, total_bytes: int | None = None) -> None:
        self.title = title
        self.enabled = enabled
        self.total = total_bytes
        self.phase = "starting"
        self.bytes: int | None = None
        self.t0 = time.monotonic()
        self._status = None
        self._guard = threading.Lock()

    def __call__(self, line: str) -> None:
        fields = parse(line)
        with self._guard:
            if "phase" in fields:
                self.phase = fields["phase"]
            for key in ("bytes", "fetched"):
                if fields.get(key, "").isdigit():
                    self.bytes = int(fields[key])
            if fields.get("total", "").isdigit():
                self.total = int(fields["total"])
            text = self.text()
        if self._status is not None:
            self._status.update(text)

    def text(self) -> str:
        from flyops.units import format_bytes

        parts = [f"{self.title}: {PHASE_TEXT.get(self.phase, self.phase)}"]
        if self.bytes is not None:
            parts.append(format_bytes(self.bytes) + (f" of {format_bytes(self.total)}" if self.total else ""))
        parts.append(f"{time.monotonic() - self.t0:.0f} s")
        return " · ".join(parts)

    @contextlib.contextmanager
    def shown(self) -> Iterator[ProgressLine]:
        if not self.enabled:
            yield self
            return
        from rich.markup import escape

        from flyops.present import console

        with console(stderr=True).status(escape(self.text())) as status:
            self._status = _Escaped(status, escape)
            ticker = threading.Event()

            def tick() -> None:  # the seconds move even while no line arrives
                while not ticker.wait(1.0):
                    with self._guard:
                        text = self.text()
                    self._status.update(text)

            t = threading.Thread(target=tick, name="progress-tick", daemon=True)
            t.start()
            try:
                yield self
            finally:
                ticker.set()
                t.join(timeout=2)
                self._status = None


class _Escaped:
    def __init__(self, status: Any, escape: Any) -> None:
        self.status, self.escape = status, escape

    def update(self, text: str) -> None:
        self.status.update(self.escape(text))


def wanted(quiet: bool) -> bool:
    """Show progress: only on a terminal, never with --json."""
    return not quiet and sys.stderr.isatty()
