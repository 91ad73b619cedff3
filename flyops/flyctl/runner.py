"""The one place flyctl runs.

`FlyRunner.run(call)` finds the binary (`$FLYCTL`, else `flyctl`, else `fly` on PATH), passes
the token through the environment only (FLY_API_TOKEN / FLY_ACCESS_TOKEN, never argv), feeds a
Secret payload on stdin, masks every known secret value in what it shows, echoes the
quoted command with its timing when verbose, and honours `--dry`: reads still run,
mutations are printed and not run. Output is parsed from `--json` only.

Files a task writes (rendered fly.toml files, store folders, workflows) go through
`FlyRunner.write_text` too, so `--dry` means the same for them: printed, not written.
`changes()` is what this run has really changed on Fly (successful mutating calls, not the
lock and audit bookkeeping), which the error boundary uses to say whether a failed or
interrupted task left something changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sh

from flyops.errors import ExitCode, OpsError, PreconditionFailed
from flyops.flyctl.commands import Call
from flyops.secret import Secret, redact

TOKEN_VARS = ("FLY_ACCESS_TOKEN", "FLY_API_TOKEN")
PROXY_READY = re.compile(r"^Proxying localhost:(\d+) to remote \[([^\]]*)\]:(\d+)")
# flyctl prints these texts instead of JSON when a list is empty (flyctl.md §9, §18)
EMPTY_LIST_TEXTS = ("No postgres clusters found", "No managed postgres clusters found")


class FlyctlError(OpsError):
    """flyctl exited non-zero. Carries flyctl's own `Error:` line, already redacted."""

    def __init__(self, call: Call, rc: int, stderr: str, shown: str):
        first = _error_line(stderr) or f"exit status {rc}"
        super().__init__(f"`{shown}` failed: {first}", code=ExitCode.FAILURE)
        self.call = call
        self.rc = rc
        self.stderr = stderr


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Error:"):
            return ln.removeprefix("Error:").strip()
    return lines[-1] if lines else ""


@dataclass
class Result:
    stdout: str
    stderr: str
    rc: int
    seconds: float
    dry: bool = False

    def json(self) -> Any:
        text = self.stdout.strip()
        if any(text.startswith(t) for t in EMPTY_LIST_TEXTS):
            return []
        return json.loads(text) if text else None


@dataclass
class CallRecord:
    args: tuple[str, ...]
    mutating: bool
    rc: int | None
    seconds: float
    dry: bool
    bookkeeping: bool = False  # the deploy lock and the audit trail: not a change of the environment


@dataclass
class FlyRunner:
    """Runs `Call`s. Thread-safe: tasks run reads concurrently from a thread pool."""

    dry: bool = False
    verbose: bool = False
    binary: str | None = None
    env: dict[str, str] | None = None
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    masks: list[Secret] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # "written PATH" / "updated PATH"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- setup ------------------------------------------------------------------------

    def add_masks(self, secrets: Iterable[Secret]) -> None:
        with self._lock:
            self.masks.extend(s for s in secrets if s)

    def resolve_binary(self) -> str:
        if self.binary:
            return self.binary
        env = self._environ()
        found = env.get("FLYCTL") or shutil.which("flyctl", path=env.get("PATH")) or shutil.which(
            "fly", path=env.get("PATH")
        )
        if not found:
            raise PreconditionFailed(
                "flyctl not found: neither $FLYCTL nor `flyctl`/`fly` on PATH",
                fix="install flyctl (https://fly.io/docs/flyctl/install/) or export FLYCTL=/path/to/flyctl",
            )
        self.binary = found
        return found

    def check_ready(self) -> None:
        """flyctl is on PATH (or $FLYCTL) and a token is in the environment: PreconditionFailed
        (exit 5) otherwise. Tasks that change Fly call it before their first call; under --dry
        too, since the reads need both."""
        self._check_token(self._environ())
        self.resolve_binary()

    def _environ(self) -> dict[str, str]:
        return dict(self.env if self.env is not None else os.environ)

    def _check_token(self, env: dict[str, str]) -> None:
        if not any(env.get(v) for v in TOKEN_VARS):
            raise PreconditionFailed(
                "no Fly token: set FLY_API_TOKEN (or FLY_ACCESS_TOKEN) in the environment",
                fix="export FLY_API_TOKEN=$(fly tokens create deploy -x 2h)  # never pass it on the command line",
            )

    def shown(self, call: Call) -> str:
        """The command as a person would type it, secrets masked (they are never in argv)."""
        return redact(shlex.join(["fly", *call.args]), self.masks)

    # -- running ----------------------------------------------------------------------

    def run(self, call: Call, *, check: bool = True, bookkeeping: bool = False) -> Result:
        """Run one call. `bookkeeping`: a call of the deploy lock or the audit trail, which
        `changes()` does not count as a change of the environment."""
        shown = self.shown(call)
        if call.mutating and self.dry:
            self.echo(f"[dry] {shown}" + ("  (values on stdin, not shown)" if call.stdin else ""))
            self._record(call, None, 0.0, dry=True, bookkeeping=bookkeeping)
            return Result("", "", 0, 0.0, dry=True)
        env = self._environ()
        self._check_token(env)
        binary = self.resolve_binary()
        if self.verbose:
            self.echo(f"$ {shown}")
        start = time.monotonic()
        try:
            proc = sh.Command(binary)(
                *call.args,
                _in=call.stdin.reveal().encode() if call.stdin else None,
                _env=env,
                _cwd=str(call.cwd) if call.cwd else None,
                _ok_code=list(range(256)),
                _return_cmd=True,
                _tty_out=False,
            )
        except sh.CommandNotFound as exc:
            raise PreconditionFailed(f"cannot run flyctl at {binary}", fix="check $FLYCTL") from exc
        except sh.SignalException as exc:
            raise OpsError(f"`{shown}` was killed by a signal", code=ExitCode.INTERRUPTED) from exc
        seconds = time.monotonic() - start
        stdout = redact(proc.stdout.decode("utf-8", "replace"), self.masks)
        stderr = redact(proc.stderr.decode("utf-8", "replace"), self.masks)
        rc = proc.exit_code
        self._record(call, rc, seconds, dry=False, bookkeeping=bookkeeping)
        if self.verbose:
            self.echo(f"  -> exit {rc} in {seconds:.2f}s")
        if rc != 0 and check:
            raise FlyctlError(call, rc, stderr, shown)
        return Result(stdout, stderr, rc, seconds)

    def json(self, call: Call) -> Any:
        if not call.json:
            raise ValueError(f"{self.shown(call)} does not ask for --json; tables are never parsed")
        result = self.run(call)
        if result.dry:
            return None
        try:
            return result.json()
        except json.JSONDecodeError as exc:
            raise OpsError(f"`{self.shown(call)}` printed something that is not JSON: {exc}") from None

    def _record(self, call: Call, rc: int | None, seconds: float, *, dry: bool, bookkeeping: bool = False) -> None:
        with self._lock:
            self.records.append(CallRecord(call.args, call.mutating, rc, seconds, dry, bookkeeping))

    @property
    def mutations(self) -> list[CallRecord]:
        return [r for r in self.records if r.mutating]

    def changes(self) -> list[str]:
        """What this run really changed: each successful mutating flyctl call (as shown, not
        the lock's or the audit trail's) and each file written, in order."""
        with self._lock:
            return [self.redacted(r.args) for r in self.records if r.mutating and not r.dry and r.rc == 0
                    and not r.bookkeeping] + list(self.written)

    def redacted(self, args: tuple[str, ...]) -> str:
        return redact(shlex.join(["fly", *args]), self.masks)

    # -- files ------------------------------------------------------------------------

    def write_text(self, path: Path, text: str, *, mode: int | None = None, shown: str | None = None) -> str:
        """Write a file only when its content differs: atomically (a temp file in the same
        folder, then a rename), making its folder; `mode` for a new or rewritten file.
        Under --dry it prints what it would write and writes nothing (no folder either).
        Returns "unchanged", "written" (it did not exist) or "updated"."""
        path = Path(path)
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        if old == text:
            return "unchanged"
        state = "written" if old is None else "updated"
        name = shown or str(path)
        if self.dry:
            self.echo(f"[dry] write {name} ({len(text.encode())} bytes, would be {state})")
            return state
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, mode if mode is not None else (path.stat().st_mode & 0o7777 if old is not None else 0o644))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self.written.append(f"{state} {name}")
        return state

    # -- background: fly proxy ----------------------------------------------------------

    def start_proxy(self, call: Call, *, timeout: float = 60.0) -> Proxy:
        """Start `fly proxy` and wait for its readiness line; returns a handle to stop it."""
        env = self._environ()
        self._check_token(env)
        binary = self.resolve_binary()
        shown = self.shown(call)
        if self.verbose:
            self.echo(f"$ {shown} &")
        ready = threading.Event()
        found: dict[str, Any] = {}
        lines: list[str] = []

        def on_out(line: str) -> None:
            lines.append(line)
            m = PROXY_READY.match(line)
            if m and not ready.is_set():
                found["port"] = int(m.group(1))
                ready.set()

        proc = sh.Command(binary)(
            *call.args, _env=env, _bg=True, _bg_exc=False, _out=on_out, _err=lambda line: lines.append(line),
            _ok_code=list(range(256)), _tty_out=False,
        )
        deadline = time.monotonic() + timeout
        while not ready.is_set():
            if not proc.is_alive():
                break
            if time.monotonic() > deadline:
                _stop(proc)
                raise OpsError(f"`{shown}` did not report it was ready within {timeout:.0f}s")
            ready.wait(0.05)
        if not ready.is_set():
            rc = proc.exit_code
            raise FlyctlError(call, rc if rc is not None else 1, redact("".join(lines), self.masks), shown)
        self._record(call, 0, 0.0, dry=False)
        return Proxy(proc=proc, local_port=found["port"])


@dataclass
class Proxy:
    proc: Any
    local_port: int

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(proc: Any) -> None:
    try:
        if proc.is_alive():
            proc.signal(2)  # SIGINT: flyctl exits 0 on it
            for _ in range(50):
                if not proc.is_alive():
                    break
                time.sleep(0.05)
            if proc.is_alive():
                proc.kill()
        proc.wait()
    except Exception:  # noqa: BLE001 - a proxy that is already gone is stopped
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
