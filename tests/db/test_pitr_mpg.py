"""The point-in-time drill of a Managed Postgres cluster, against the stand-in's `fly mpg` with
REAL PostgreSQL recovery behind it (tests/pitr_hook.py --product mpg): the same drill
(flyops/db/pitr_drill.py) over `MpgBackups` instead of `FlexBackups`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest

from flyops.db.pgconn import with_dbname
from flyops.db.scratch import ScratchCluster
from flyops.fly import mpg
from flyops.fly.flyctl.runner import FlyRunner
from tests.pitr_source import FAKEFLY, HOOK, _owned_dir

sys.path.insert(0, str(FAKEFLY.parent))
from fakefly import mpg as fakempg  # noqa: E402
from fakefly import state as fakestate  # noqa: E402


@pytest.fixture
def mpg_world(tmp_path):
    """A real source server that archives its WAL, known to the stand-in as a ready MPG cluster
    whose credentials are that server's, registered with the hook by cluster id."""
    archive, base, restores = _owned_dir("flyops-wal-"), _owned_dir("flyops-base-"), _owned_dir("flyops-pitr-")
    home = tmp_path / "fly"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "FLY_API_TOKEN": "fm2_tests", "FAKEFLY_HOME": str(home),
           "FLY_CONFIG_DIR": str(home / "dot-fly"), "FAKEFLY_PITR_HOOK": str(HOOK)}
    runner = FlyRunner(binary=str(FAKEFLY), env=env, echo=lambda line: None)
    settings = {"wal_level": "replica", "archive_mode": "on", "full_page_writes": "on",
                "archive_command": f"'test ! -f {archive}/%f && cp %p {archive}/%f'",
                "track_commit_timestamp": "on", "max_wal_senders": "4"}
    with ScratchCluster(settings=settings) as server:
        server.psql("CREATE DATABASE app")
        cid = mpg.create_mpg_cluster(runner, mpg.create("my-app-staging-db", "personal", "fra", plan="basic",
                                                        volume_size_gb=10, pg_major_version=16),
                                     org="personal", name="my-app-staging-db")
        fakempg.set_credentials(home, cid, user="postgres", password=server.password.reveal(), dbname="app")
        (home / "pitr" / "sources").mkdir(parents=True)
        (home / "pitr" / "sources" / f"{cid}.json").write_text(json.dumps({
            "bindir": str(server.bindir), "socket_dir": str(server.socket_dir), "port": server.port,
            "archive_dir": str(archive), "base_dir": str(base), "run_as": server.run_as,
            "restore_root": str(restores)}))
        try:
            yield {"home": home, "runner": runner, "cluster": cid, "server": server, "archive": archive,
                   "restores": restores}
        finally:
            for rec in (home / "pitr" / "restored").glob("*.json") if (home / "pitr" / "restored").exists() else []:
                subprocess.run([sys.executable, str(HOOK), "destroy", "--product", "mpg", "--target", rec.stem,
                                "--home", str(home)], check=False)
            for d in (archive, base, restores):
                subprocess.run(["rm", "-rf", str(d)], check=False)


def _sql(server, text, db="app"):
    with psycopg.connect(server.url(db).reveal(), autocommit=True) as c:
        cur = c.execute(text)
        return cur.fetchall() if cur.description else None


def _full_backup(w) -> None:
    """Fly's full backup of the cluster: a real pg_basebackup by the hook, listed by `mpg backup list`."""
    out = subprocess.run([sys.executable, str(HOOK), "backup", "--product", "mpg", "--source", w["cluster"],
                          "--home", str(w["home"])], capture_output=True, text=True, check=True).stdout
    b = json.loads(out)
    start = datetime.strptime(b["begin_time"], "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    stop = datetime.strptime(b["end_time"], "%a %b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    fakempg.seed_backup(w["home"], w["cluster"], kind="full", start=start, stop=stop)
    with fakestate.mutate(w["home"]) as st:
        st["mpg"]["clusters"][w["cluster"]]["backups"][-1]["_path"] = b["_path"]


def _archived(server, archive) -> None:
    seg = _sql(server, "SELECT pg_walfile_name(pg_current_wal_lsn())", "postgres")[0][0]
    _sql(server, "SELECT pg_switch_wal()", "postgres")
    deadline = time.monotonic() + 30
    while not (archive / seg).exists():
        assert time.monotonic() < deadline, f"{seg} never reached the archive"
        time.sleep(0.1)


def test_mpg_pitr_drill_restores_exactly_the_rows_before_the_time_and_leaves_no_cluster(mpg_world, tmp_path, repo):
    from flyops.db.backup import backup
    from flyops.db.config import BackupSource
    from flyops.db.pitr_drill import logical_manifests, run_pitr_drill

    w, server = mpg_world, mpg_world["server"]
    _sql(server, "CREATE TABLE orders (id int PRIMARY KEY, note text)")
    _sql(server, "INSERT INTO orders SELECT g, 'first' FROM generate_series(1, 10) g")
    _full_backup(w)
    manifest = backup(BackupSource(url=server.url("app"), env="staging"), repo, reason="before the time")
    time.sleep(1.1)
    at = datetime.now(UTC)
    time.sleep(1.1)
    _sql(server, "INSERT INTO orders SELECT g, 'later' FROM generate_series(11, 25) g")
    _archived(server, w["archive"])
    # an incremental backup after the time: MpgBackups' latest restorable time is the end of the
    # newest completed backup (flyctl shows no WAL position), so this is what brackets `at`
    now = datetime.now(UTC)
    fakempg.seed_backup(w["home"], w["cluster"], kind="incr", start=now, stop=now)

    backups = mpg.MpgBackups(w["runner"], w["cluster"], org="personal", interval=0.05)
    window = backups.window()
    assert window.product == "mpg" and window.last_full is not None
    seen: dict = {}
    original_connect = backups.connect

    def connect_and_look(restored):
        import contextlib

        @contextlib.contextmanager
        def inner():
            with original_connect(restored) as url:
                with psycopg.connect(with_dbname(url, "app").reveal()) as c:
                    seen["rows"] = c.execute("SELECT id, note FROM orders ORDER BY id").fetchall()
                yield url
        return inner()

    backups.connect = connect_and_look
    res = run_pitr_drill(env="staging", backups=backups, new_name="my-app-pitr-staging-mpg", at=at, selection="t",
                         manifests=logical_manifests(repo, "staging", at), database="app", rpo=60,
                         report_base=tmp_path / "report")
    assert res.outcome == "passed", (res.error, res.verification and res.verification.to_dict())
    assert res.product == "mpg"
    assert seen["rows"] == [(i, "first") for i in range(1, 11)]  # exactly the rows before the time
    assert res.rpo_source.startswith("pg_xact_commit_timestamp") and 1.0 <= res.rpo_measured < 10
    assert res.rto_measured > 0 and res.compared_with == [manifest["id"]]
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["layer"] == "pitr" and doc["outcome"] == "passed"
    # nothing left behind: the restored cluster destroyed, its server stopped, its mapping gone
    assert fakempg.cluster_named(w["home"], "my-app-pitr-staging-mpg") is None
    assert not list((w["home"] / "pitr" / "restored").glob("*.json"))
    assert not any(w["restores"].iterdir())
    assert json.loads((w["home"] / "services.json").read_text()) == {}
