"""Process helpers shared by the runner, the hosts and the scratch servers.

Nothing here starts a process: child processes are started by the flyctl runner
(`flyops.fly.flyctl.runner`) or a host (`flyops.db.hosts`), so that masking, `--dry`, echo and
timing each live in one place. This module has what both need around them: a free port, waiting
for a port, ending a process group, SIGTERM as Ctrl-C, and who is running this.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries on a bind race)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> bool:
    """True once something accepts connections on host:port, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def end_process_group(pgid: int, grace: float = 5.0) -> None:
    """End the process group `pgid` (a script's session): SIGTERM, then SIGKILL after `grace`
    seconds for anything still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-pgid, os.WNOHANG)
            time.sleep(0.05)


def _raise_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt("SIGTERM" if signum == signal.SIGTERM else f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM (systemd stopping a unit, a CI job cancelled, `timeout`) raises
    KeyboardInterrupt like Ctrl-C does, so every `finally` runs: a partial backup is forgotten,
    a half-restored database dropped, a deploy lock released, a scratch server stopped. Without
    this Python dies on the spot. Only the main thread may install handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Signals:
    """SIGINT and SIGTERM -> KeyboardInterrupt while inside, with a sticky record of the signal
    (a step that swallowed it is caught by `check()` between steps) and `defer()` for teardown,
    which must run to its end: a signal during it is recorded, not raised."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame):  # noqa: ARG002
        self.received = signum
        if not self.deferred:
            raise KeyboardInterrupt(f"signal {signum}")

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def check(self) -> None:
        if self.received is not None and not self.deferred:
            raise KeyboardInterrupt(f"signal {self.received}")

    @contextlib.contextmanager
    def defer(self) -> Iterator[None]:
        self.deferred = True
        try:
            yield
        finally:
            self.deferred = False


def operator() -> str:
    """Who is running this: $FLYOPS_OPERATOR, else the GitHub Actions actor and run, else user@host."""
    if os.environ.get("FLYOPS_OPERATOR"):
        return os.environ["FLYOPS_OPERATOR"]
    if os.environ.get("GITHUB_ACTIONS") == "true":
        actor = os.environ.get("GITHUB_ACTOR", "?")
        repo = os.environ.get("GITHUB_REPOSITORY", "?")
        run = os.environ.get("GITHUB_RUN_ID", "?")
        return f"github-actions:{actor} ({repo} run {run})"
    return user_at_host()


def user_at_host() -> str:
    """This process's OS user and this machine's name, `user@host` (a label only)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
