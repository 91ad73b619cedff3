"""dr.drill, db.verify, demo and schedule.* end to end."""

import json
import os
import tempfile

import pytest

from flyops.db.sample import seed_sample
from tests.helpers import write_env
from tests.tasks.conftest import STAGING_VALUES


def _scratch_clusters() -> set[str]:
    """Scratch cluster folders in use by a process or present in the temp folder (this run's
    TMPDIR, which the demo inherits: another test run on the machine has its own)."""
    tmp = tempfile.gettempdir()
    found = {p for p in os.listdir(tmp) if p.startswith("flyops-pg-")}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        found |= {w[len(tmp) + 1:].split("/")[0] for w in cmd.split("\0") if w.startswith(f"{tmp}/flyops-pg-")}
    return found


def test_demo_runs_the_whole_main_job_and_cleans_up(ops):
    before = _scratch_clusters()
    r = ops.inv("demo", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["outcome"] == "passed"
    assert report["rto"]["met"] and report["rpo"]["met"]
    phases = [p["name"] for p in report["phases"]]
    assert phases[:4] == ["provision", "restore", "verify", "teardown"]
    assert list((ops.root / "var/demo").iterdir()) == []  # the repository was removed
    assert list((ops.root / "var/drills/demo").glob("*.md"))
    assert _scratch_clusters() <= before  # no server, no folder left behind


@pytest.fixture
def backed_up(ops, pg, make_db):
    db = make_db("app")
    seed_sample(pg.url(db).reveal())
    write_env(ops.root, "local", {"DATABASE_URL": pg.url(db).reveal(), "RESTIC_PASSWORD": "pw-for-drills"})
    assert ops.inv("db.init", "--env", "local").returncode == 0
    assert ops.inv("db.backup", "--env", "local").returncode == 0
    return ops


def test_drill_verify_and_missed_target(backed_up):
    ops = backed_up
    r = ops.inv("db.verify", "--env", "local", "--level", "decode", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    listed = json.loads(ops.inv("db.list", "--env", "local", "--json").stdout)["backups"]
    assert listed[0]["verified"]["level"] == "decode"

    missed = ops.inv("dr.drill", "--env", "local", "--rto", "1s", "--json")
    assert missed.returncode == 6, missed.stderr
    data = json.loads(missed.stdout)
    assert data["rto"]["met"] is False and data["verification"]["ok"] is True

    stale = ops.inv("db.verify", "--env", "local", "--level", "fresh", "--max-age", "1s")
    assert stale.returncode == 3
    assert ops.inv("dr.drill", "--env", "local", "--rto", "soon").returncode == 2


def test_schedule_show_prints_cron_and_systemd(ops):
    r = ops.inv("schedule.show", "--env", "local")
    assert r.returncode == 0, r.stderr
    cron = [line for line in r.stdout.splitlines() if line and line[0].isdigit()]
    assert len(cron) == 3
    assert "db.backup --env local --kind scheduled --if-older-than 20h" in cron[0]
    assert "db.prune --env local --yes" in cron[1] and "dr.drill --env local" in cron[2]
    assert "OnCalendar=" in r.stdout


def test_schedule_fly_creates_the_runner_without_leaking(ops):
    values = {**STAGING_VALUES, "POSTGRES_PASSWORD": "pg-pw-Ab3", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
              "AWS_SECRET_ACCESS_KEY": "aws-secret-Cd4"}
    write_env(ops.root, "production", values)
    r = ops.inv("schedule.fly", "--env", "production", "--image", "registry.fly.io/my-app-backup:pg15", "--yes")
    assert r.returncode == 0, r.stderr
    argvs = ops.mutations()
    assert [a[:2] for a in argvs] == [["apps", "create"], ["secrets", "import"], ["machine", "run"]]
    run = argvs[2]
    assert run[run.index("--schedule") + 1] == "daily" and run[run.index("--app") + 1] == "my-app-backup-production"
    log = (ops.home / "argv.log").read_text()
    for v in values.values():
        assert v not in log and v not in r.stdout + r.stderr
    env = ops.fly("ssh", "console", "--app", "my-app-backup-production", "--command", "printenv DATABASE_URL")
    # the scheduled machine sees the direct URL inside the private network (no fly proxy there)
    assert env.returncode == 0, env.stderr
    assert "my-app-production-db.internal:5432/my_app" in env.stdout
    refused = ops.inv("schedule.fly", "--env", "staging", "--image", "registry.fly.io/x:1", "--yes")
    assert refused.returncode == 2 and "S3-compatible" in refused.stderr
