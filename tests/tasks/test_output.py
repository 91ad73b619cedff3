"""Output for people and for pipes: no table cuts an id or a name without a terminal, every
task that reports has --json, and with --json an error or a refusal is JSON on stdout too."""

from __future__ import annotations

import fcntl
import json
import os

from flyops.db.sample import seed_sample
from tests.helpers import write_env

RESTIC_PW = "restic-pw-output-42"


def local(ops, pg, make_db):
    db = make_db("out")
    url = pg.url(db).reveal()
    seed_sample(url)
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": RESTIC_PW})
    assert ops.inv("db.init", "--env", "local").returncode == 0


def test_db_list_in_a_pipe_shows_whole_backup_ids(ops, pg, make_db, tmp_path):
    local(ops, pg, make_db)
    made = json.loads(ops.inv("db.backup", "--env", "local", "--json", TMPDIR=str(tmp_path)).stdout)["id"]
    r = ops.inv("db.list", "--env", "local", COLUMNS="40")  # a pipe, and a narrow $COLUMNS: still whole
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith(made[:8]))
    assert row.split()[0] == made, r.stdout
    assert "…" not in r.stdout and "│" not in r.stdout  # plain columns, nothing cut


def test_status_in_a_pipe_shows_whole_app_names(ops):
    for c in ("web", "worker", "cable", "cache", "kredis", "jobs"):
        assert ops.fly("apps", "create", f"my-app-staging-{c}", "--org", "personal").returncode == 0
    r = ops.inv("status", "--env", "staging", COLUMNS="40")
    assert r.returncode == 0, r.stderr
    for c in ("web", "worker", "cable", "cache", "kredis", "jobs"):
        assert f"my-app-staging-{c}" in r.stdout.split(), r.stdout
    assert "…" not in r.stdout


def test_every_reporting_task_has_json(ops, tmp_path):
    (ops.root / ".." / "my-app").mkdir(exist_ok=True)
    docs = {}
    for argv in (("lock.acquire", "--env", "staging", "-m", "json please"), ("lock.status", "--env", "staging"),
                 ("lock.release", "--env", "staging"), ("config.check", "--env", "staging"),
                 ("schedule.show", "--env", "local"), ("ci.workflows", "--ops-repo", "acme/ops", "--out", str(tmp_path / "wf"))):
        r = ops.inv(*argv, "--json")
        assert r.returncode == 0, (argv, r.stderr)
        docs[argv[0]] = json.loads(r.stdout)
    assert docs["lock.acquire"]["held"] is True and docs["lock.release"]["released"] is True
    assert docs["config.check"]["current"] is True
    assert sum(line[:1].isdigit() for line in docs["schedule.show"]["crontab"]) == 3 and docs["schedule.show"]["systemd"]
    assert set(docs["ci.workflows"]["files"].values()) == {"written"}


def test_a_refused_backup_says_why_in_json(ops, pg, make_db, tmp_path):
    local(ops, pg, make_db)
    locks = tmp_path / "flyops-locks"
    locks.mkdir()
    fd = os.open(locks / "backup-local.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another backup runs
    try:
        r = ops.inv("db.backup", "--env", "local", "--json", TMPDIR=str(tmp_path))
    finally:
        os.close(fd)
    assert r.returncode == 4, r.stderr
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 4 and "another backup of local is running" in doc["error"]


def test_durations_are_human_beside_seconds(ops):
    from flyops.units import human_duration

    assert human_duration(93600) == "26h00m (93600 s)"
    assert human_duration(600) == "10m00s (600 s)"
    assert human_duration(12.34) == "12.3s"
