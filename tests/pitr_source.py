"""A flex cluster's source for the point-in-time tests: a real PostgreSQL that archives its WAL
into a folder (the Tigris bucket's stand-in), registered with the stand-in's data-plane hook
(tests/pitr_hook.py) and known to the stand-in as the app `my-app-staging-db`."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from flyops.db.scratch import ScratchCluster
from flyops.fly.flyctl.runner import FlyRunner
from flyops.fly.pgbackup import FlexBackups
from tests.helpers import REPO

FAKEFLY = REPO / "tests" / "fakefly" / "flyctl"
HOOK = REPO / "tests" / "pitr_hook.py"
SRC = "my-app-staging-db"


def _owned_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


class FlexWorld:
    def __init__(self, home: Path, cluster: ScratchCluster, archive: Path, base: Path, restores: Path):
        self.home, self.cluster, self.archive, self.base, self.restores = home, cluster, archive, base, restores
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FAKEFLY_", "FLY_"))},
                    "FAKEFLY_HOME": str(home), "FLY_API_TOKEN": "test-token", "FLY_CONFIG_DIR": str(home / "dot-fly"),
                    "FAKEFLY_PITR_HOOK": str(HOOK)}
        self.runner = FlyRunner(binary=str(FAKEFLY), env=self.env, echo=lambda line: None)

    def fly(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(FAKEFLY), *args], capture_output=True, text=True, env=self.env, timeout=120)

    def sql(self, text: str, db: str = "app"):
        with psycopg.connect(self.cluster.url(db).reveal(), autocommit=True) as c:
            cur = c.execute(text)
            return cur.fetchall() if cur.description else None

    def archived(self) -> None:
        """Switch to a new WAL segment and wait until the old one is in the archive."""
        seg = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")[0][0]
        self.sql("SELECT pg_switch_wal()", "postgres")
        deadline = time.monotonic() + 30
        while not (self.archive / seg).exists():
            assert time.monotonic() < deadline, f"{seg} never reached the archive"
            time.sleep(0.1)

    def backups(self, **kw) -> FlexBackups:
        @contextlib.contextmanager
        def source_url():
            yield self.cluster.url("postgres")

        return FlexBackups(app=SRC, run=self.runner.run, spawn=self.runner.start_proxy, source_url=source_url,
                           mask=self.runner.add_masks, **kw)

    def apps(self) -> list[str]:
        return sorted(json.loads((self.home / "state.json").read_text())["apps"])


@contextlib.contextmanager
def flex_world(tmp_path: Path, *, password: str | None = None, database: str = "app"):
    archive, base, restores = _owned_dir("flyops-wal-"), _owned_dir("flyops-base-"), _owned_dir("flyops-pitr-")
    settings = {"wal_level": "replica", "archive_mode": "on", "full_page_writes": "on",
                "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
                "track_commit_timestamp": "on", "max_wal_senders": "4"}
    home = tmp_path / "fly"
    home.mkdir(exist_ok=True)
    cluster = ScratchCluster(settings=settings)
    if password:
        from flyops.secret import Secret

        cluster.password = Secret(password)
    with cluster:
        w = FlexWorld(home, cluster, archive, base, restores)
        cluster.psql(f"CREATE DATABASE {database}")
        pw = ["--password", password] if password else []
        r = w.fly("postgres", "create", "--name", SRC, "--org", "personal", "--region", "fra", *pw,
                  "--initial-cluster-size", "1", "--vm-size", "shared-cpu-2x", "--volume-size", "1", "--enable-backups")
        assert r.returncode == 0, r.stderr
        (home / "pitr" / "sources").mkdir(parents=True)
        (home / "pitr" / "sources" / f"{SRC}.json").write_text(json.dumps({
            "bindir": str(cluster.bindir), "socket_dir": str(cluster.socket_dir), "port": cluster.port,
            "archive_dir": str(archive), "base_dir": str(base), "run_as": cluster.run_as,
            "restore_root": str(restores)}))
        try:
            yield w
        finally:
            for rec in (home / "pitr" / "restored").glob("*.json") if (home / "pitr" / "restored").exists() else []:
                subprocess.run([sys.executable, str(HOOK), "destroy", "--product", "flex", "--target", rec.stem,
                                "--home", str(home)], check=False)
            for d in (archive, base, restores):
                subprocess.run(["rm", "-rf", str(d)], check=False)


