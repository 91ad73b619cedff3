"""The one place flyctl runs.

`FlyRunner.run(call)` finds the binary (`$FLYCTL`, else `flyctl`, else `fly` on PATH), passes
the token through the environment only (FLY_API_TOKEN / FLY_ACCESS_TOKEN, never argv), feeds a
Secret payload on stdin, masks every known secret value in what it shows, echoes the
quoted command with its timing when verbose, and honours `--dry`: reads still run,
mutations are printed and not run. Output is parsed from `--json` only.

flyctl keeps state of its own in `config.yml` in its config directory (`$FLY_CONFIG_DIR`, else
`~/.fly`: flyctl helpers/config.go `GetConfigDirectory`). Every process reads that file once at
start-up, and a process that changes an app's secrets (or attaches a database, or destroys an
app) writes the whole `app_secrets_minvers` map back from that start-up snapshot
(internal/appsecrets/minvers.go `setMinvers`, internal/config/file.go `SetAppSecretsMinvers`).
Two such processes at once lose one's entry, and later deploys then send no minimum secrets
version for that app. So calls marked `writes_fly_config` run one at a time per config
directory: a thread lock plus an `flock` on `<config dir>/flyops.writers.lock`, which also
serialises them against another `inv` on the same machine. A separate config directory per
process is no way out: the next deploy reads the shared one and would not see the entry at all.
Deploys and reads stay concurrent; they only read the file.

Files a task writes (rendered fly.toml files, store folders, workflows) go through
`FlyRunner.write_text` too, so `--dry` means the same for them: printed, not written.
`changes()` is what this run has really changed on Fly (successful mutating calls, not the
lock and audit bookkeeping), which the error boundary uses to say whether a failed or
interrupted task left something changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sh

from flyops.errors import ExitCode, OpsError, PreconditionFailed
from flyops.fly.flyctl.commands import Call
from flyops.secret import Secret, redact

TOKEN_VARS = ("FLY_ACCESS_TOKEN", "FLY_API_TOKEN")
#: where a scheduled job keeps its token instead of its environment or argv: a file named by
#: this variable (chmod 600), or the systemd credential `fly-api-token` (LoadCredential=)
TOKEN_FILE_VAR = "FLY_API_TOKEN_FILE"
TOKEN_CREDENTIAL = "fly-api-token"
#: A token refused for what it was asked to do. Every macaroon check that fails says
#: "unauthorized ..." (superfly/macaroon errors.go ErrUnauthorized, resset "unauthorized for"),
#: which flyctl prints after "Error: " as the API returned it (fly-go flaps/flaps.go
#: handleAPIError); GraphQL says "Not authorized to ..." (the server's wording is not in
#: flyctl's source). Only flyctl's `Error:` line is looked at: a failing deploy with a deploy
#: token also warns "not authorized to retrieve app logs" (deploy/machines_releasecommand.go).
REFUSED = re.compile(r"\b(unauthorized|not authorized)\b", re.I)
TOKEN_FIX = ("use an org token: export FLY_API_TOKEN=$(fly tokens create org -o ORG -x 2h) "
             "(a deploy token covers one app only); README: 'Which Fly token'")
WRITERS_LOCK = "flyops.writers.lock"
_WRITERS = threading.Lock()  # one process, any number of runners
PROXY_READY = re.compile(r"^Proxying localhost:(\d+) to remote \[([^\]]*)\]:(\d+)")
# flyctl prints these texts instead of JSON when a list is empty (flyctl.md §9, §18;
# mpg backup list: internal/command/mpg/v2/run_backup.go RunBackupList)
EMPTY_LIST_TEXTS = ("No postgres clusters found", "No managed postgres clusters found", "No backups found for cluster")


class FlyctlError(OpsError):
    """flyctl exited non-zero. Carries flyctl's own `Error:` line, already redacted."""

    def __init__(self, call: Call, rc: int, stderr: str, shown: str):
        first = _error_line(stderr) or f"exit status {rc}"
        super().__init__(f"`{shown}` failed: {first}", code=ExitCode.FAILURE)
        self.call = call
        self.rc = rc
        self.stderr = stderr


class TokenRefused(FlyctlError):
    """flyctl ran, and Fly refused the token for this call (exit 5: the wrong token)."""

    code = ExitCode.PRECONDITION

    def __init__(self, call: Call, rc: int, stderr: str, shown: str):
        super().__init__(call, rc, stderr, shown)
        self.message = (f"the Fly token is not allowed to run `{shown}` "
                        f"(flyctl: {_error_line(stderr)})")
        self.fix = TOKEN_FIX
        self.code = ExitCode.PRECONDITION
        self.args = (self.message,)


def _error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Error:"):
            return ln.removeprefix("Error:").strip()
    return lines[-1] if lines else ""


@dataclass
class Result:
    stdout: str  # with every known secret masked: safe to print, log or keep
    stderr: str
    rc: int
    seconds: float
    dry: bool = False
    #: stdout as flyctl printed it, for the few callers that must read a secret out of it
    #: (`mpg status --json` credentials): masking would turn a value already known into ********
    #: (a plain string kept out of repr, not a Secret: registering every output would mask it in every log)
    raw_stdout: str | None = field(default=None, repr=False)

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
        """A token in the environment, else from a file meant for it (the child gets it in its
        environment either way, never in argv)."""
        if not any(env.get(v) for v in TOKEN_VARS):
            token = token_from_file(env)
            if token is not None:
                self.add_masks([token])
                env["FLY_API_TOKEN"] = token.reveal()
        env.pop(TOKEN_FILE_VAR, None)
        if not any(env.get(v) for v in TOKEN_VARS):
            raise PreconditionFailed(
                "no Fly token: set FLY_API_TOKEN (or FLY_ACCESS_TOKEN) in the environment, "
                f"or {TOKEN_FILE_VAR} to a chmod-600 file holding it",
                fix="export FLY_API_TOKEN=$(fly tokens create org -x 2h)  # never pass it on the command line; "
                    "README: 'Which Fly token'",
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
            with self._config_writer(env) if call.writes_fly_config else contextlib.nullcontext():
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
            if REFUSED.search(_error_line(stderr)):
                raise TokenRefused(call, rc, stderr, shown)
            raise FlyctlError(call, rc, stderr, shown)
        return Result(stdout, stderr, rc, seconds, raw_stdout=proc.stdout.decode("utf-8", "replace"))

    def run_command(self, argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Result:
        """Run a program of the user's (a `[hooks]` command) the way flyctl calls are run: masked
        output, echoed with -v, timed; never under --dry (the caller prints what it would run).
        rc 127 when the program is missing; OpsError when it outlives `timeout`."""
        shown = redact(shlex.join(argv), self.masks)
        if self.verbose:
            self.echo(f"$ {shown}")
        start = time.monotonic()
        try:
            proc = sh.Command(argv[0])(*argv[1:], _cwd=str(cwd), _env=env, _ok_code=list(range(256)),
                                       _return_cmd=True, _timeout=timeout, _tty_out=False)
        except sh.CommandNotFound:
            return Result("", f"{argv[0]}: command not found", 127, 0.0)
        except sh.TimeoutException:
            raise OpsError(f"`{shown}` did not finish within {timeout:.0f}s") from None
        seconds = time.monotonic() - start
        if self.verbose:
            self.echo(f"  -> exit {proc.exit_code} in {seconds:.2f}s")
        return Result(redact(proc.stdout.decode("utf-8", "replace"), self.masks),
                      redact(proc.stderr.decode("utf-8", "replace"), self.masks), proc.exit_code, seconds)

    def json(self, call: Call, *, with_secrets: bool = False) -> Any:
        """The call's JSON output. `with_secrets`: parsed from what flyctl printed, unmasked; the
        caller must register the secrets it reads (add_masks) and never print the data."""
        if not call.json:
            raise ValueError(f"{self.shown(call)} does not ask for --json; tables are never parsed")
        result = self.run(call)
        if result.dry:
            return None
        if with_secrets and result.raw_stdout is not None:
            result = Result(result.raw_stdout, result.stderr, result.rc, result.seconds)
        try:
            return result.json()
        except json.JSONDecodeError as exc:
            raise OpsError(f"`{self.shown(call)}` printed something that is not JSON: {exc}") from None

    @contextlib.contextmanager
    def _config_writer(self, env: dict[str, str]) -> Iterator[None]:
        """Hold the writers' lock of flyctl's config directory for the whole process."""
        directory = fly_config_dir(env)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _WRITERS:
            fd = os.open(directory / WRITERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

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

    def note_change(self, what: str) -> None:
        """A change a *failed* call made all the same (e.g. `fly mpg create` exits 1 on a cluster
        that ended in `error`, and the cluster exists): counted in `changes()`."""
        with self._lock:
            self.written.append(redact(what, self.masks))

    def redacted(self, args: tuple[str, ...]) -> str:
        return redact(shlex.join(["fly", *args]), self.masks)

    # -- files ------------------------------------------------------------------------

    def write_text(self, path: Path, text: str, *, mode: int | None = None, shown: str | None = None,
                   build_output: bool = False) -> str:
        """Write a file only when its content differs: atomically (a temp file in the same
        folder, then a rename), making its folder; `mode` for a new or rewritten file.
        Under --dry it prints what it would write and writes nothing (no folder either).
        `build_output`: a file generated for this run's builds (var/build/), which `changes()`
        does not count as a change of the environment.
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
        if not build_output:
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


def token_from_file(env: dict[str, str]) -> Secret | None:
    """The token of a scheduled job: `$FLY_API_TOKEN_FILE`, else the systemd credential
    `$CREDENTIALS_DIRECTORY/fly-api-token` (LoadCredential=). None when neither is set."""
    named = env.get(TOKEN_FILE_VAR)
    creds = env.get("CREDENTIALS_DIRECTORY")
    if named:
        path = Path(named)
    elif creds and (Path(creds) / TOKEN_CREDENTIAL).exists():
        path = Path(creds) / TOKEN_CREDENTIAL
    else:
        return None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PreconditionFailed(f"cannot read the Fly token file {path}: {exc.strerror}",
                                 fix=f"create it: fly tokens create ... > {path} && chmod 600 {path}") from None
    if mode & 0o077 and not creds:
        raise PreconditionFailed(f"the Fly token file {path} is readable by group or others",
                                 fix=f"chmod 600 {path}")
    if not text:
        raise PreconditionFailed(f"the Fly token file {path} is empty",
                                 fix=f"fly tokens create ... > {path} && chmod 600 {path}")
    return Secret(text)


def fly_config_dir(env: dict[str, str]) -> Path:
    """flyctl's config directory for a child with this environment (helpers/config.go)."""
    if "FLY_CONFIG_DIR" in env:
        return Path(env["FLY_CONFIG_DIR"])
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".fly"


def parallel(calls: dict[Any, Callable[[], Any]], workers: int = 16) -> dict[Any, Any]:
    """Run independent reads concurrently; re-raise the first error."""
    if not calls:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(calls))) as pool:
        futures = {key: pool.submit(fn) for key, fn in calls.items()}
        return {key: f.result() for key, f in futures.items()}


FlyRun = Callable[[Call], Any]  # FlyRunner.run / a stand-in of it: runs one flyctl call
