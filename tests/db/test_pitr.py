"""Fly's point-in-time layer against the stand-in, with REAL PostgreSQL point-in-time recovery behind it.

The source cluster archives every WAL segment into a folder (the Tigris bucket's stand-in) and
`fly postgres backup create` takes a real pg_basebackup through tests/pitr_hook.py; a restore then
recovers a copy of it to the requested time (recovery_target_time) on a new port, reached through
`fly proxy` like a Fly app (tests/pitr_source.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest

from flyops.db.pgconn import with_dbname
from tests.helpers import REPO
from tests.pitr_source import FAKEFLY, HOOK, SRC, flex_world


@pytest.fixture
def flex(tmp_path):
    with flex_world(tmp_path) as w:
        yield w


def test_stand_in_backup_commands_are_flyctls(flex):
    w = flex
    r = w.fly("postgres", "backup", "list", "-a", SRC)
    assert r.returncode == 0 and r.stdout.strip() == "No backups found"
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    from flyops.fly.pgbackup import parse_backup_list, parse_config_show

    rows = parse_backup_list(w.fly("postgres", "backup", "list", "-a", SRC).stdout)
    assert len(rows) == 1 and rows[0].status == "DONE" and rows[0].end_time is not None
    assert (w.base / rows[0].id / "PG_VERSION").exists()  # a real base backup
    assert parse_config_show(w.fly("postgres", "backup", "config", "show", "-a", SRC).stdout) == {
        "archive_timeout": "60s", "recovery_window": "7d", "full_backup_frequency": "24h", "minimum_redundancy": "3"}
    bad = w.fly("postgres", "backup", "config", "update", "-a", SRC, "--full-backup-frequency", "30m")
    assert bad.returncode == 0 and "expected to be >= 1h" in bad.stderr  # ExecOnMachine ignores the remote exit
    assert w.fly("postgres", "backup", "enable", "-a", SRC).stderr.strip().endswith("backups are already enabled")
    w.fly("postgres", "create", "--name", "plain-db", "--org", "personal", "--region", "fra",
          "--initial-cluster-size", "1", "--vm-size", "shared-cpu-1x", "--volume-size", "1")
    r = w.fly("postgres", "backup", "list", "-a", "plain-db")
    assert r.returncode == 1 and "backups are not enabled. Run `fly pg backup enable -a plain-db`" in r.stderr
    r = w.fly("postgres", "backup", "enable", "-a", "plain-db")
    assert r.returncode == 1 and "at least 512MB" in r.stderr


def test_window_from_the_list_and_the_archiver(flex):
    w = flex
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    w.sql("CREATE TABLE t (i int)")
    w.archived()
    win = w.backups().window()
    assert win.product == "flex" and win.cluster == SRC
    assert win.earliest == win.last_full and win.last_full is not None
    assert win.latest is not None and win.latest >= win.last_full
    assert (datetime.now(UTC) - win.latest).total_seconds() < 30


def test_pitr_drill_restores_exactly_the_rows_before_the_time(flex, tmp_path, repo):
    from flyops.db.backup import backup
    from flyops.db.config import BackupSource
    from flyops.db.pitr_drill import logical_manifests, run_pitr_drill

    w = flex
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    w.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)")
    w.sql("INSERT INTO orders SELECT g, 'first' FROM generate_series(1, 10) g")
    manifest = backup(BackupSource(url=w.cluster.url("app"), env="staging"), repo, reason="before the time")
    time.sleep(1.1)
    at = datetime.now(UTC)
    time.sleep(1.1)
    w.sql("INSERT INTO orders SELECT g, 'later' FROM generate_series(11, 25) g")
    w.archived()

    seen: dict = {}
    backups = w.backups()
    original_connect = backups.connect

    @contextlib.contextmanager
    def connect_and_look(restored):
        with original_connect(restored) as url:
            with psycopg.connect(with_dbname(url, "app").reveal()) as c:
                seen["rows"] = c.execute("SELECT id, note FROM orders ORDER BY id").fetchall()
            yield url

    backups.connect = connect_and_look
    manifests = logical_manifests(repo, "staging", at)
    assert [m["id"] for m in manifests] == [manifest["id"]]
    res = run_pitr_drill(env="staging", backups=backups, new_name="my-app-pitr-staging-1", at=at, selection="t",
                         manifests=manifests, database="app", rpo=60, report_base=tmp_path / "report")
    assert res.outcome == "passed", (res.error, res.verification and res.verification.to_dict())
    assert seen["rows"] == [(i, "first") for i in range(1, 11)]  # exactly the rows before the time
    assert res.rpo_source.startswith("pg_xact_commit_timestamp")
    assert 1.0 <= res.rpo_measured < 10  # the first rows' commit was ~1.1 s before the time
    assert res.rto_measured > 0 and res.compared_with == [manifest["id"]]
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["layer"] == "pitr" and doc["rpo"]["measured_s"] == pytest.approx(res.rpo_measured, abs=1e-3)
    assert doc["pitr"]["window"]["last_full"] and doc["outcome"] == "passed"
    assert "Platform point-in-time restore" in (tmp_path / "report.md").read_text()
    assert w.apps() == [SRC]  # the restored app is gone
    assert not list((w.home / "pitr" / "restored").glob("*.json"))
    assert not any(w.restores.iterdir())
    assert "my-app-pitr-staging-1" not in json.loads((w.home / "services.json").read_text())


def test_a_time_after_the_archive_is_refused_before_anything_is_made(flex, tmp_path):
    from flyops.db.pitr_drill import run_pitr_drill

    w = flex
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    future = datetime.now(UTC).replace(year=datetime.now(UTC).year + 1)
    res = run_pitr_drill(env="staging", backups=w.backups(), new_name="my-app-pitr-staging-2", at=future,
                         report_base=tmp_path / "r")
    assert res.outcome == "failed" and int(res.exit_code) == 5 and "latest restorable" in res.error
    assert w.apps() == [SRC]
    assert not any(e["argv"][:3] == ["postgres", "backup", "restore"]
                   for e in map(json.loads, (w.home / "argv.log").read_text().splitlines()))


def test_a_failed_recovery_leaves_no_app_behind(flex, tmp_path):
    """A restore flyctl reports as done (exit 0) without `created`: the drill fails and destroys it."""
    from flyops.db.pitr_drill import run_pitr_drill

    w = flex
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    w.sql("CREATE TABLE t (i int)")
    w.archived()
    for seg in w.archive.iterdir():  # the bucket lost its WAL: recovery cannot reach consistency
        seg.unlink()
    res = run_pitr_drill(env="staging", backups=w.backups(), new_name="my-app-pitr-staging-3", at=None,
                         report_base=tmp_path / "r")
    assert res.outcome == "failed" and "returned without creating the cluster" in res.error
    assert w.apps() == [SRC]
    assert not any(w.restores.iterdir())


SIGINT_SCRIPT = r"""
import contextlib, json, sys
sys.path.insert(0, sys.argv[1])
from flyops.fly.pgbackup import FlexBackups
from flyops.fly.flyctl.runner import FlyRunner
from flyops.db.pitr_drill import run_pitr_drill
from flyops.secret import Secret
runner = FlyRunner(binary=sys.argv[2], echo=lambda line: None)
@contextlib.contextmanager
def src():
    yield Secret(sys.argv[3])
b = FlexBackups(app=sys.argv[4], run=runner.run, spawn=runner.start_proxy, source_url=src)
res = run_pitr_drill(env="staging", backups=b, new_name="my-app-pitr-staging-9", report_base=sys.argv[5])
print(json.dumps({"outcome": res.outcome, "exit": int(res.exit_code)}))
"""


def test_sigint_mid_restore_tears_the_new_cluster_down(flex, tmp_path):
    w = flex
    assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
    w.sql("CREATE TABLE t (i int)")
    w.archived()
    env = {**w.env, "PYTHONPATH": str(REPO)}
    slow = tmp_path / "slow_hook"  # the real hook, after a pause inside the restore (the new app exists)
    slow.write_text(f"#!/bin/sh\n[ \"$1\" = restore ] && sleep 3\nexec {sys.executable} {HOOK} \"$@\"\n")
    slow.chmod(0o755)
    env["FAKEFLY_PITR_HOOK"] = str(slow)
    p = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT, str(REPO), str(FAKEFLY), w.cluster.url().reveal(), SRC,
                          str(tmp_path / "r")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 60
    while "my-app-pitr-staging-9" not in w.apps():
        assert time.monotonic() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    out, err = p.communicate(timeout=120)
    assert json.loads(out.strip().splitlines()[-1]) == {"outcome": "interrupted", "exit": 130}, err
    assert w.apps() == [SRC]
    assert not list((w.home / "pitr" / "restored").glob("*.json"))
    assert not any(w.restores.iterdir())
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["outcome"] == "interrupted" and doc["phases"][-1]["name"] == "teardown" and doc["phases"][-1]["ok"]
