"""A throwaway PostgreSQL cluster: temp folder, free port on 127.0.0.1, always torn down.

Used by restore drills ("restore into scratch") and by the test fixtures, so neither needs a
running server. `initdb`/`pg_ctl` refuse to run as root, so when we are root every server
binary runs as an unprivileged OS user (`runuser -u postgres --`) and the temp folder is
handed to that user.

Access: the Unix socket (inside the temp folder, mode 0700) is `trust`; TCP on 127.0.0.1 needs
the generated superuser password (scram), so `url()` is a `Secret`.

    with ScratchCluster() as pg:
        conn = psycopg.connect(pg.url("postgres").reveal())
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from flyops.db.hosts import ProcessFailed, run_program
from flyops.errors import OpsError, PreconditionFailed
from flyops.procs import free_port
from flyops.secret import Secret

SUPERUSER = "postgres"


def find_pg_bindir(major: int | None = None) -> Path:
    """Where initdb/pg_ctl/pg_dump live: `pg_config --bindir` if it has initdb, else the newest
    `/usr/lib/postgresql/<major>/bin` (or exactly `major` when given)."""
    candidates: list[Path] = []
    if major is None:
        found = run_program(["pg_config", "--bindir"], check=False)
        if found.ok:
            candidates.append(Path(found.stdout.strip()))
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        majors = sorted((int(p.name) for p in root.iterdir() if p.name.isdigit()), reverse=True)
        if major is not None:
            majors = [m for m in majors if m == major]
        candidates += [root / str(m) / "bin" for m in majors]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    wanted = f"PostgreSQL {major}" if major else "PostgreSQL"
    raise PreconditionFailed(
        f"{wanted} server binaries (initdb, pg_ctl) not found via pg_config --bindir or /usr/lib/postgresql/*/bin",
        fix="run scripts/setup (installs postgresql and postgresql-contrib), or apt-get install postgresql",
    )


def _unprivileged_user() -> str | None:
    """The OS user to run server binaries as, or None when we already are unprivileged."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PreconditionFailed(
        "running as root and there is no 'postgres' OS user to run the scratch cluster as",
        fix="apt-get install postgresql (creates the postgres user), or run as a normal user",
    )


class ScratchCluster:
    """A PostgreSQL cluster living in a temp folder for as long as the `with` block."""

    def __init__(self, *, bindir: Path | str | None = None, major: int | None = None, run_as: str | None = "auto",
                 settings: dict[str, str] | None = None, base_dir: str | None = None):
        self._bindir = Path(bindir) if bindir else None
        self._major = major
        self._run_as_opt = run_as
        self.settings = dict(settings or {})
        self._base_dir = base_dir
        self.password = Secret(secrets.token_urlsafe(24))
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.dir: Path | None = None
        self.run_as: str | None = None

    # -- paths -------------------------------------------------------------------------
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_pg_bindir(self._major)
        return self._bindir

    @property
    def datadir(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "sock"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None, "cluster not started"
        return self.dir / "server.log"

    def url(self, dbname: str = "postgres") -> Secret:
        """postgresql://postgres:<password>@127.0.0.1:<port>/<dbname> (a Secret: it holds the password)."""
        if self.port is None:
            raise OpsError("scratch cluster is not running; call start() first")
        return Secret(
            f"postgresql://{SUPERUSER}:{quote(self.password.reveal(), safe='')}@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def server_version_num(self) -> int:
        out = self._psql("-Atc", "SHOW server_version_num")
        return int(out.strip())

    # -- running binaries ----------------------------------------------------------------
    def _argv(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return argv

    def _run(self, tool: str, *args: str) -> str:
        argv = self._argv(tool, *args)
        # cwd: runuser keeps the cwd, which may be unreadable for the unprivileged user
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return run_program(argv, cwd=self.dir, env=env, merge_stderr=True).stdout

    def _psql(self, *args: str, dbname: str = "postgres") -> str:
        return self._run("psql", "-X", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER,
                         "-d", dbname, *args)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through the trusted Unix socket (no password); returns unaligned output."""
        return self._psql("-v", "ON_ERROR_STOP=1", "-Atc", sql, dbname=dbname)

    def _chown(self, path: Path) -> None:
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> ScratchCluster:
        """initdb + pg_ctl start on a free port. Cleans up after itself if anything fails."""
        if self.dir is not None:
            return self
        bindir = self.bindir  # PreconditionFailed before creating anything
        self.run_as = _unprivileged_user() if self._run_as_opt == "auto" else self._run_as_opt
        self.dir = Path(tempfile.mkdtemp(prefix="flyops-pg-", dir=self._base_dir))
        try:
            os.chmod(self.dir, 0o700)
            self._chown(self.dir)
            self.socket_dir.mkdir(mode=0o700)
            self._chown(self.socket_dir)
            pwfile = self.dir / "pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password.reveal() + "\n")
            self._chown(pwfile)
            try:
                self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                          "--no-sync")
            except ProcessFailed as e:
                raise OpsError(f"initdb failed in {self.datadir}:\n{_tail(e.result.stdout)}") from None
            finally:
                pwfile.unlink(missing_ok=True)
            last: str = ""
            for _attempt in range(5):  # another process may grab the port between probe and bind
                self.port = free_port(self.host)
                self._write_conf()
                try:
                    self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60", "start")
                    return self
                except ProcessFailed:
                    last = self.log_tail()
                    if "could not bind" not in last and "already in use" not in last:
                        break
            raise OpsError(f"scratch PostgreSQL ({bindir}) did not start on {self.host}:{self.port}; log tail:\n{last}")
        except BaseException:
            self.stop()
            raise

    def _write_conf(self) -> None:
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            "logging_collector": "off",
        }
        conf.update(self.settings)
        path = self.datadir / "postgresql.auto.conf"
        path.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        self._chown(path)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return _tail(self.logfile.read_text(errors="replace"), lines)
        except (OSError, AssertionError):
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server (immediate mode, then SIGKILL) and remove the folder. Idempotent."""
        if self.dir is None:
            return
        try:
            pidfile = self.dir / "data" / "postmaster.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessFailed, OSError):
                    self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "-t", "30", "stop")
                self._kill_leftover(pidfile)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            self.port = None

    @staticmethod
    def _kill_leftover(pidfile: Path) -> None:
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)

    def __enter__(self) -> ScratchCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


