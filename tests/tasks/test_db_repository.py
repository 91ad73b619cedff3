"""db.init, the first run, --dry for the database tasks, the repository lock across two hosts
on S3, and progress on a terminal: real `inv` processes against real PostgreSQL, restic and
moto's S3 server."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flyops.db.config import RepoConfig
from flyops.db.hosts import LocalHost
from flyops.db.repolock import live_locks
from flyops.db.restic import Repo
from flyops.db.sample import seed_sample
from flyops.secret import Secret
from tests.helpers import REPO, copy_stack, edit, write_env
from tests.tasks.conftest import INV, STAGING_VALUES, Ops

PW = "restic-pw-repo-tests-7q"


@pytest.fixture
def local(ops, pg, make_db):
    db = make_db("app")
    url = pg.url(db).reveal()
    seed_sample(url)
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": PW})
    ops.db, ops.url = db, url
    ops.repo = RepoConfig(str(ops.root / "var/backups/local"), Secret(PW))
    return ops


def _snapshots(ops) -> list[str]:
    return sorted(s["id"] for s in Repo(ops.repo, LocalHost()).snapshots())


def _databases(pg) -> str:
    return pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_first_run_needs_db_init_and_a_deleted_repository_stays_deleted(local):
    repo_dir = local.root / "var/backups/local"
    refused = local.inv("db.backup", "--env", "local")
    assert refused.returncode == 5, refused.stderr
    assert "no restic repository" in refused.stderr and "db.init" in refused.stderr
    assert not repo_dir.exists()

    created = local.inv("db.init", "--env", "local", "--json")
    assert created.returncode == 0 and json.loads(created.stdout)["created"] is True
    again = local.inv("db.init", "--env", "local")
    assert again.returncode == 0 and "already there" in again.stdout
    assert local.inv("db.backup", "--env", "local").returncode == 0

    shutil.rmtree(repo_dir)  # deleted (or an unmounted disk): the cron job must not report success
    cron = local.inv("db.backup", "--env", "local", "--kind", "scheduled", "--if-older-than", "20h")
    assert cron.returncode == 5 and "no restic repository" in cron.stderr
    assert not repo_dir.exists()
    first = local.inv("db.backup", "--env", "local", "--init", "--json")  # the documented first-run flag
    assert first.returncode == 0, first.stderr


def test_wrong_repository_password_names_restic(local):
    assert local.inv("db.init", "--env", "local").returncode == 0
    write_env(local.root, "local", {"DATABASE_URL": local.url, "RESTIC_PASSWORD": "not-the-password"})
    r = local.inv("db.backup", "--env", "local")
    assert r.returncode == 1 and "restic" in r.stderr and "wrong password" in r.stderr
    assert "pg_dump" not in r.stderr and "not-the-password" not in r.stderr


def test_dry_db_tasks_change_nothing(local, pg):
    edit(local.root / "fly/local.toml", 'rpo = "26h"',
         'rpo = "26h"\nretention = { daily = 1, weekly = 0, monthly = 0, minimum = 1 }')
    repo_dir = local.root / "var/backups/local"

    dry_init = local.inv("--dry", "db.init", "--env", "local")
    assert dry_init.returncode == 0 and "restic init" in dry_init.stdout and not repo_dir.exists()
    dry_first = local.inv("--dry", "db.backup", "--env", "local", "--json")
    assert dry_first.returncode == 0 and json.loads(dry_first.stdout)["would_fail"] is True
    assert not repo_dir.exists()

    assert local.inv("db.init", "--env", "local").returncode == 0
    assert local.inv("db.backup", "--env", "local").returncode == 0
    assert local.inv("db.backup", "--env", "local").returncode == 0  # the older one is now droppable
    snaps, dbs, files = _snapshots(local), _databases(pg), _files(repo_dir)

    b = local.inv("--dry", "db.backup", "--env", "local")
    assert b.returncode == 0, b.stderr
    assert "[dry]" in b.stdout and "pg_dump --format=custom" in b.stdout and "restic" in b.stdout
    r = local.inv("--dry", "db.restore", "--env", "local", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["dry"] and any("CREATE DATABASE" in s for s in plan["steps"])
    over = local.inv("--dry", "db.restore", "--env", "local", "--to", local.url, "--confirm", local.db)
    assert over.returncode == 0 and "pre-restore backup" in over.stdout
    p = local.inv("--dry", "db.prune", "--env", "local", "--yes", "--json")
    assert p.returncode == 0, p.stderr
    pplan = json.loads(p.stdout)
    assert len(pplan["drop"]) == 1 and any("restic prune" in s for s in pplan["steps"])
    d = local.inv("--dry", "dr.drill", "--env", "local")
    assert d.returncode == 0, d.stderr
    assert "throwaway PostgreSQL" in d.stdout

    assert _snapshots(local) == snaps  # no snapshot, no lock, no verification record
    assert _databases(pg) == dbs  # no database created or renamed
    assert _files(repo_dir) == files  # no prune, no restic lock left
    assert not (local.root / "var/drills").exists()  # no drill report

    for out in (b, r, over, p, d):
        assert PW not in out.stdout + out.stderr
        assert (pg.password.reveal() not in out.stdout + out.stderr)


def test_dry_schedule_fly_neither_prompts_nor_creates(ops):
    values = {**STAGING_VALUES, "POSTGRES_PASSWORD": "pg-pw-Ab3", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
              "AWS_SECRET_ACCESS_KEY": "aws-secret-Cd4"}
    write_env(ops.root, "production", values)
    r = ops.inv("--dry", "schedule.fly", "--env", "production", "--image", "registry.fly.io/my-app-backup:pg15",
                input="")  # no --yes: without --dry this would ask
    assert r.returncode == 0, r.stderr
    assert "machine run" in r.stdout and "[dry] nothing was created" in r.stdout
    assert "create the scheduled backup machine" not in r.stdout + r.stderr
    assert ops.mutations() == []
    for v in values.values():
        assert v not in r.stdout + r.stderr


def _host(tmp_path: Path, name: str, s3, location: str, url: str) -> Ops:
    """A checkout on its own "machine": its own root, HOME, TMPDIR (so no shared flock)."""
    root = copy_stack(tmp_path / name / "repo")
    edit(root / "fly/local.toml", 'repository = "var/backups/local"', f'repository = "{location}"')
    write_env(root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": PW, "AWS_ACCESS_KEY_ID": s3.access_key,
                              "AWS_SECRET_ACCESS_KEY": s3.secret_key.reveal()})
    home = tmp_path / name / "home"
    (tmp_path / name / "tmp").mkdir(parents=True)
    home.mkdir()
    return Ops(root=root, home=home)


def test_backup_lock_holds_across_two_hosts_on_one_s3_repository(tmp_path, pg, make_db, s3):
    location = s3.restic_location(f"two-hosts-{os.urandom(3).hex()}")
    a_db, b_db = make_db("laptop"), make_db("ci")  # two databases: the database's advisory lock cannot help
    for db in (a_db, b_db):
        seed_sample(pg.url(db).reveal())
    a = _host(tmp_path, "laptop", s3, location, pg.url(a_db).reveal())
    b = _host(tmp_path, "ci", s3, location, pg.url(b_db).reveal())
    env_a = {"HOME": str(a.home), "TMPDIR": str(tmp_path / "laptop/tmp"), "XDG_RUNTIME_DIR": ""}
    env_b = {"HOME": str(b.home), "TMPDIR": str(tmp_path / "ci/tmp"), "XDG_RUNTIME_DIR": ""}
    assert a.inv("db.init", "--env", "local", **env_a).returncode == 0

    slow = tmp_path / "slow"
    slow.mkdir()
    marker = slow / "started"
    real = shutil.which("pg_dump") or str(pg.bindir / "pg_dump")
    (slow / "pg_dump").write_text(f'#!/bin/bash\n[ "$1" = --version ] || {{ touch {marker}; sleep 30; }}\n'
                                  f'exec {real} "$@"\n')
    (slow / "pg_dump").chmod(0o755)
    first = subprocess.Popen([str(INV), "--search-root", str(REPO), "db.backup", "--env", "local", "--json"],
                             env=a.env(PATH=f"{slow}:{os.environ['PATH']}", **env_a), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = b.inv("db.backup", "--env", "local", "--json", **env_b)
        assert second.returncode == 4, second.stderr
        assert f"holds the lock in {location}" in second.stderr and "pid" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=90)
    assert first.returncode == 130
    after = b.inv("db.backup", "--env", "local", "--json", **env_b)  # the interrupted run gave the lock back
    assert after.returncode == 0, after.stderr
    config = RepoConfig(location, Secret(PW), Secret(s3.access_key), s3.secret_key)
    locks = Repo(config, LocalHost()).snapshots("part=lock")
    assert live_locks(locks) == {}
    # the refused run could not forget its lock while the first one's restic was writing (restic's
    # forget needs its exclusive lock), so it marked it released; db.prune removes such snapshots
    assert locks == [] or any("released" in s["tags"] for s in locks)
    assert b.inv("db.prune", "--env", "local", "--yes", **env_b).returncode == 0
    assert Repo(config, LocalHost()).snapshots("part=lock") == []


def _run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a pseudo-terminal; (exit code, everything it printed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.execve(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        r, _, _ = select.select([fd], [], [], 1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert time.monotonic() < deadline, out[-2000:]
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_progress_on_a_terminal_and_quiet_otherwise(local, pg, make_db):
    # enough data that the dump takes a few status lines
    with __import__("psycopg").connect(local.url, autocommit=True) as c:
        c.execute("CREATE TABLE bulk AS SELECT g, decode(md5(g::text) || md5((g+1)::text), 'hex') AS b "
                  "FROM generate_series(1, 400000) g")
    assert local.inv("db.init", "--env", "local").returncode == 0
    # a pg_dump that keeps its output open 2 s after the dump: the status line has time to show
    # the bytes however fast (or loaded) the machine is
    slow = local.root / "slow-bin"
    slow.mkdir()
    real = shutil.which("pg_dump") or str(pg.bindir / "pg_dump")
    (slow / "pg_dump").write_text(f'#!/bin/bash\n[ "$1" = --version ] && exec {real} "$@"\n'
                                  f'{real} "$@"; rc=$?; sleep 2; exit $rc\n')
    (slow / "pg_dump").chmod(0o755)
    env = {**local.env(), "TERM": "xterm", "COLUMNS": "120", "PATH": f"{slow}:{os.environ['PATH']}"}
    env.pop("NO_COLOR", None)
    base = [str(INV), "--search-root", str(REPO)]
    rc, shown = _run_in_pty([*base, "db.backup", "--env", "local"], env)
    assert rc == 0, shown
    assert "backup of local: dumping" in shown and "MiB" in shown, shown[-3000:]  # phases and bytes while it ran
    rc, shown = _run_in_pty([*base, "db.restore", "--env", "local"], env)
    assert rc == 0, shown
    phases = ("reading the table of contents", "creating the schema", "loading data", "building indexes", "ANALYZE")
    assert "restore into local:" in shown and any(p in shown for p in phases), shown[-3000:]  # the script's phases

    # the other side: no TTY (cron, CI, a pipe), or --json on a terminal
    piped = local.inv("db.backup", "--env", "local")
    assert piped.returncode == 0 and "@flyops-progress" not in piped.stdout + piped.stderr
    assert "dumping" not in piped.stderr and piped.stderr.strip() == ""
    rc, shown = _run_in_pty([*base, "db.backup", "--env", "local", "--json"], env)
    assert rc == 0 and "dumping" not in shown and "@flyops-progress" not in shown
    json.loads(shown[shown.index("{"):].replace("\r\n", "\n"))  # stdout is the JSON object only
