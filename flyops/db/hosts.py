"""Where a pipeline runs: this machine (`LocalHost`, via sh) or another (`SshHost`, via fabric);
and `run_program`, one program from an argv list on this machine.

Both offer the same `run_script(script, secrets)`: the script is run by `bash -c`, and the
secrets travel on the child's **stdin**, one line each, read by a prelude this module puts in
front of the script (`IFS= read -r NAME; export NAME`). argv (including a remote
`bash -c '...'`) only ever holds the script text, which must not contain a secret value:
`run_script` refuses one that does.

Backup and restore code takes a `Host` and never asks which kind it got, so `--on user@host`
runs exactly the same scripts as a local run.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sh

from flyops.errors import BadInput, OpsError
from flyops.procs import end_process_group, free_port, user_at_host, wait_listening
from flyops.progress import MARK as PROGRESS_MARK
from flyops.secret import Secret, redact

_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class RunResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class ProcessFailed(OpsError):
    """A program run by `run_program` exited non-zero (or could not be started: rc 127)."""

    def __init__(self, argv0: str, result: RunResult):
        self.result = result
        super().__init__(f"{Path(argv0).name} exited {result.rc}")


def run_program(argv: list[str], *, env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                timeout: float | None = None, merge_stderr: bool = False, check: bool = True) -> RunResult:
    """Run one program on this machine from an argv list (no shell); the one place besides
    `LocalHost.run_script` where a local process starts. `merge_stderr`: stderr joins stdout (a
    tool whose messages the caller shows as one text). Raises ProcessFailed when `check` and the
    program fails or is missing, OpsError on timeout."""
    try:
        proc = sh.Command(argv[0])(*argv[1:], _env=dict(env) if env is not None else None,
                                   _cwd=str(cwd) if cwd else None, _err_to_out=merge_stderr, _tty_out=False,
                                   _ok_code=list(range(256)), _return_cmd=True, _timeout=timeout,
                                   _decode_errors="replace")
        result = RunResult(proc.exit_code, _text(proc.stdout), _text(proc.stderr))
    except sh.CommandNotFound:
        result = RunResult(127, "", f"{argv[0]}: command not found")
    except sh.TimeoutException:
        raise OpsError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None
    if check and not result.ok:
        raise ProcessFailed(argv[0], result)
    return result


def secret_prelude(names: list[str], keep_stdin: bool = False) -> str:
    """The lines that move secrets from stdin into exported variables, then detach stdin
    (unless the script reads data that follows the secrets: `keep_stdin`)."""
    lines = ["set -u"]
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"secret variable name {name!r} must be UPPER_SNAKE_CASE")
        lines.append(f"IFS= read -r {name} || {{ echo 'flyops: secret {name} missing on stdin' >&2; exit 97; }}")
        lines.append(f"export {name}")
    if not keep_stdin:
        lines.append("exec </dev/null")
    return "\n".join(lines) + "\n"


def prepare(script: str, secrets: Mapping[str, Secret], data: str | None = None) -> tuple[str, str]:
    """-> (full script for argv, stdin text). Refuses a script that carries a secret value.

    `data`, when given, follows the secret lines on stdin for the script to read (e.g. `cat`)."""
    for name, value in secrets.items():
        v = value.reveal()
        if "\n" in v or "\r" in v:
            raise BadInput(f"secret {name} contains a line break; it cannot be passed on stdin line by line")
        if len(v) >= 4 and v in script:
            raise OpsError(f"refusing to run a script that contains the value of {name} (it would be in argv)")
    full = secret_prelude(list(secrets), keep_stdin=data is not None) + script
    stdin = "".join(value.reveal() + "\n" for value in secrets.values()) + (data or "")
    return full, stdin


class Host(Protocol):
    name: str  # user@host, for manifests and messages

    def run_script(self, script: str, secrets: Mapping[str, Secret] | None = None, *,
                   data: str | None = None, timeout: float | None = None) -> RunResult: ...

    def reach(self, url: Secret) -> contextlib.AbstractContextManager[Secret]: ...

    def get(self, remote: str, local: str) -> None: ...

    def put(self, local: str, remote: str) -> None: ...


class LocalHost:
    """This machine; processes through `sh`."""

    def __init__(self) -> None:
        self.name = user_at_host()
        self.progress: Callable[[str], None] | None = None  # gets the scripts' progress lines (flyops.progress)

    def run_script(self, script: str, secrets: Mapping[str, Secret] | None = None, *,
                   data: str | None = None, timeout: float | None = None) -> RunResult:
        """Run `script` in a session of its own. If this process is interrupted meanwhile
        (Ctrl-C, or SIGTERM turned into KeyboardInterrupt), the whole session goes with it:
        bash and everything it started (pg_dump, restic, pg_restore and its workers), TERM
        first so that the scripts' EXIT traps clean up, then KILL."""
        secrets = dict(secrets or {})
        full, stdin = prepare(script, secrets, data)
        bash = shutil.which("bash") or "/bin/bash"
        err_lines: list[str] = []

        def on_err(line: str | bytes) -> None:  # stderr line by line: progress lines go to `progress`, live
            text = _text(line)
            if text.startswith(PROGRESS_MARK):
                if self.progress is not None:
                    with contextlib.suppress(Exception):
                        self.progress(text.rstrip("\n"))
            else:
                err_lines.append(text)

        proc = sh.Command(bash)("-c", full, _in=stdin, _ok_code=list(range(256)), _bg=True, _bg_exc=False,
                                _new_session=True, _tty_out=False, _decode_errors="replace", _err=on_err)
        try:
            proc.wait(timeout=timeout)
            rc, out = proc.exit_code, proc.stdout
        except sh.SignalException as e:
            rc, out = 128 + abs(e.exit_code), e.stdout
        except sh.TimeoutException:
            end_process_group(proc.pid)
            raise OpsError(f"script on {self.name} did not finish within {timeout:.0f}s") from None
        except BaseException:
            end_process_group(proc.pid)
            raise
        vals = list(secrets.values())
        return RunResult(rc, redact(_text(out), vals), redact("".join(err_lines), vals))

    @contextlib.contextmanager
    def reach(self, url: Secret) -> Iterator[Secret]:
        """A URL this process can use for the database the host reaches at `url`: here, itself."""
        yield url

    def get(self, remote: str, local: str) -> None:
        if Path(remote).resolve() != Path(local).resolve():
            shutil.copyfile(remote, local)

    def put(self, local: str, remote: str) -> None:
        self.get(local, remote)


class SshHost:
    """Another machine over SSH (`fabric.Connection`); same scripts, same secrets-on-stdin."""

    def __init__(self, host: str, *, user: str | None = None, port: int | None = None,
                 key_filename: str | None = None, connect_timeout: float = 15):
        from fabric import Connection  # imported here: only `--on` needs paramiko

        kwargs: dict = {}
        if key_filename:
            kwargs = {"key_filename": str(key_filename), "look_for_keys": False, "allow_agent": False}
        self.conn = Connection(host, user=user, port=port, connect_timeout=connect_timeout, connect_kwargs=kwargs)
        self.name = f"{self.conn.user}@{self.conn.host}"
        if self.conn.port != 22:
            self.name += f":{self.conn.port}"
        self.progress: Callable[[str], None] | None = None  # gets the scripts' progress lines (flyops.progress)

    @classmethod
    def parse(cls, target: str, *, key_filename: str | None = None) -> SshHost:
        """`user@host`, `user@host:port` or `host` (the `--on` option)."""
        m = re.match(r"^(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(\d+))?$", target or "")
        if not m:
            raise BadInput(f"--on {target!r}: expected user@host or user@host:port")
        user, host, port = m.group(1), m.group(2).strip("[]"), m.group(3)
        return cls(host, user=user, port=int(port) if port else None, key_filename=key_filename)

    def run_script(self, script: str, secrets: Mapping[str, Secret] | None = None, *,
                   data: str | None = None, timeout: float | None = None) -> RunResult:
        """Run `script` on the host. If this process is interrupted meanwhile, the script's
        session on the host is ended too (`end_marked_session_script`): without a pty, Fabric
        would only close the channel, after the script had finished by itself."""
        secrets = dict(secrets or {})
        full, stdin = prepare(script, secrets, data)
        token = os.urandom(8).hex()
        full = f"# {RUN_MARK}{token}\n" + full  # in argv on the host, so that an interrupt can find it
        try:
            # stderr is mirrored (hide="stdout") into a writer that hands progress lines on as they come
            promise = self.conn.run("bash -c " + shlex.quote(full), in_stream=io.StringIO(stdin), echo_stdin=False,
                                    hide="stdout", err_stream=_ProgressWriter(self), warn=True, timeout=timeout,
                                    pty=False, asynchronous=True)
            try:
                while not promise.runner.process_is_finished:
                    time.sleep(0.05)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.conn.run("bash -c " + shlex.quote(end_marked_session_script(token)), hide=True, warn=True,
                                  timeout=30, pty=False)
                with contextlib.suppress(Exception):
                    promise.join()
                raise
            r = promise.join()
        except Exception as e:  # paramiko/socket errors: unreachable host, auth failure
            raise OpsError(f"cannot run on {self.name}: {type(e).__name__}: {e}",
                           fix="check `ssh` to the host works with the same user, port and key") from None
        vals = list(secrets.values())
        err = "".join(line for line in r.stderr.splitlines(keepends=True) if not line.startswith(PROGRESS_MARK))
        return RunResult(r.exited, redact(r.stdout, vals), redact(err, vals))

    @contextlib.contextmanager
    def reach(self, url: Secret) -> Iterator[Secret]:
        """The SQL sessions that go with a dump or a restore (exported snapshot, row counts,
        CREATE/RENAME DATABASE) must reach the database the host reaches, which may be
        reachable from the host only (a bastion in Fly's private network): forward a local
        port through this SSH connection to the database's address as the host sees it."""
        from flyops.db import pgconn
        host, port = pgconn.address(url)
        local = free_port()
        try:
            with self.conn.forward_local(local_port=local, remote_port=port, remote_host=host,
                                         local_host="127.0.0.1"):
                if not wait_listening("127.0.0.1", local):  # fabric binds the local end in a thread
                    raise OpsError(f"the SSH port forward on 127.0.0.1:{local} did not start listening")
                yield pgconn.with_address(url, "127.0.0.1", local)
        except OpsError:
            raise
        except (OSError, EOFError) as e:
            raise OpsError(f"cannot forward a port through {self.name} to {host}:{port}: {e}",
                           fix="check that the host reaches the database and allows TCP forwarding") from None

    def get(self, remote: str, local: str) -> None:
        self.conn.get(remote, local)

    def put(self, local: str, remote: str) -> None:
        self.conn.put(local, remote)

    def close(self) -> None:
        self.conn.close()


class _ProgressWriter:
    """The err_stream of a remote script: passes whole progress lines to the host's `progress`
    and drops everything else (Fabric keeps the full stderr in the result anyway)."""

    def __init__(self, host: SshHost) -> None:
        self.host, self.buf = host, ""

    def write(self, data: str) -> int:
        self.buf += data
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            if line.startswith(PROGRESS_MARK) and self.host.progress is not None:
                with contextlib.suppress(Exception):
                    self.host.progress(line)
        return len(data)

    def flush(self) -> None:
        pass


#: The comment `SshHost.run_script` puts in front of every script, followed by a random token.
RUN_MARK = "flyops-run-"


def end_marked_session_script(token: str) -> str:
    """bash that ends, on the host, the session of the script marked `RUN_MARK + token`: it
    finds the processes whose command line carries the mark (through /proc, so procps is not
    needed), then sends their process group TERM (the scripts trap it and clean up), and KILL
    to what is left after 5 s. The pattern is written so this script's own argv does not match."""
    if not re.match(r"^[0-9a-f]{8,32}$", token):
        raise ValueError(f"token {token!r}")
    pattern = f"{RUN_MARK[:-2]}[{RUN_MARK[-2]}]-{token}"
    return f"""\
pgid_of() {{ local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${{s##*) }}; set -- $s; echo "$3"; }}
self=$(pgid_of $$); groups=
for d in /proc/[0-9]*; do
  grep -qa -e '{pattern}' "$d/cmdline" 2>/dev/null || continue
  g=$(pgid_of "${{d#/proc/}}") || continue
  [ "$g" -gt 1 ] && [ "$g" != "$self" ] && groups="$groups $g"
done
[ -n "$groups" ] || exit 0
for sig in TERM KILL; do
  for g in $groups; do kill -"$sig" -- "-$g" 2>/dev/null; done
  n=0
  while [ "$n" -lt 50 ]; do
    alive=; for g in $groups; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && exit 0
    sleep 0.1; n=$((n+1))
  done
done
"""


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b
