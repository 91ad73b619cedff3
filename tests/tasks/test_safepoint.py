"""The safe point before every migration, end to end: `inv deploy` against the flyctl stand-in,
whose `fly proxy` leads to a real PostgreSQL, backing up into a real restic repository; then
`inv rollback --with-data` restoring that backup into a new database and swapping onto it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime

import psycopg
import pytest

from flyops.db.sample import seed_sample
from tests.deploy_env import DeployEnv
from tests.helpers import REPO, edit, fly_changes, set_safe_point, write_env

RESTIC_PW = "restic-pw-safepoint-4k"
IMAGE1, IMAGE2 = "registry.fly.io/my-app:v1", "registry.fly.io/my-app:v2"


@pytest.fixture
def site(tmp_path, pg, make_db):
    """A staging environment on the stand-in whose database (`my-app-staging-db`, reached with
    `fly proxy`) is a seeded database on the real test cluster, with an initialised repository;
    web and worker deployed once (IMAGE1)."""
    db = make_db("my_app")
    seed_sample(pg.url(db).reveal())
    env = DeployEnv(tmp_path, safe_point="auto")
    edit(env.root / "fly/stack.toml", 'name = "my_app"', f'name = "{db}"')
    set_safe_point(env.root, "staging", "auto")  # re-renders after the name change
    write_env(env.root, "staging", {"POSTGRES_PASSWORD": pg.password.reveal(), "RESTIC_PASSWORD": RESTIC_PW})
    (env.home / "services.json").write_text(json.dumps({"my-app-staging-db.internal:5432": f"127.0.0.1:{pg.port}"}))
    env.db, env.pg = db, pg
    # this test's own backup flock (flyops.db.backup.default_lock_dir), not the machine's
    (tmp_path / "run").mkdir()
    env.base_env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    first = env.inv("deploy", "--env", "staging", "--image", IMAGE1)
    assert first.returncode == 0, first.stderr
    assert "no safe point: web's first release" in first.stderr
    return env


def sql(pg, db: str, query: str, *args):
    with psycopg.connect(pg.url(db).reveal(), autocommit=True) as c:
        cur = c.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def databases(pg, prefix: str) -> list[str]:
    return [r[0] for r in sql(pg, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                               prefix + "%")]


def restic_snapshots(env: DeployEnv) -> list[dict]:
    """The repository's snapshots as restic lists them (restic from .venv/bin, as the tasks use)."""
    repo = env.root / "var" / "backups" / "staging"
    p = subprocess.run(["restic", "-r", str(repo), "snapshots", "--json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RESTIC_PASSWORD": RESTIC_PW,
                            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) or []


def restic_time(text: str) -> datetime:
    """restic's RFC 3339 time with nanoseconds, to microseconds for Python."""
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    assert m, text
    return datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6]:0<6}{m.group(3).replace('Z', '+00:00')}")


def deploy_line(env: DeployEnv) -> dict:
    r = env.inv("audit", "--env", "staging", "--json")
    assert r.returncode == 0, r.stderr
    return next(e for e in json.loads(r.stdout)["entries"] if e["task"] == "deploy")


def release_events(env: DeployEnv) -> list[dict]:
    return [e for e in env.events() if e["type"] == "release_command"]


def test_a_deploy_whose_migration_is_about_to_run_backs_up_first(site):
    assert site.inv("db.init", "--env", "staging").returncode == 0
    before = len(release_events(site))
    r = site.inv("deploy", "--env", "staging", "--image", IMAGE2)
    assert r.returncode == 0, r.stderr
    assert "safe point: backup " in r.stderr
    point = deploy_line(site)["details"]["safe_point"]
    assert point["kind"] == "backup" and point["database"] == site.db and point["backup_id"]
    # the backup is in the repository, complete and pinned, and db.list shows it
    listed = json.loads(site.inv("db.list", "--env", "staging", "--json").stdout)["backups"]
    row = next(b for b in listed if b["id"] == point["backup_id"])
    assert row["pinned"] and row["bytes"] == point["bytes"] > 0
    # ... and it was complete (its manifest written) before web's release command ran
    manifest = next(s for s in restic_snapshots(site)
                    if f"id={point['backup_id']}" in s.get("tags", []) and "part=manifest" in s.get("tags", []))
    done = restic_time(manifest["time"])
    [release] = release_events(site)[before:]
    assert release["app"] == "my-app-staging-web" and done.timestamp() < release["t"]
    # the audit line's sentence says so too
    assert f"safe point: backup {point['backup_id']}" in deploy_line(site)["changed"]


def test_an_unchanged_image_or_a_deploy_without_web_records_no_safe_point(site):
    r = site.inv("deploy", "--env", "staging", "--image", IMAGE1)  # web already runs it: migrations have run
    assert r.returncode == 0, r.stderr
    assert "no safe point: web already runs" in r.stderr
    assert deploy_line(site)["details"]["safe_point"]["kind"] == "skipped"
    r = site.inv("deploy", "--env", "staging", "--image", IMAGE2, "--only", "worker")
    assert r.returncode == 0 and "no safe point: web is not part of this deploy" in r.stderr, r.stderr
    assert not (site.root / "var" / "backups" / "staging").exists()  # no repository needed, none touched


def test_an_over_threshold_database_records_the_servers_time(site):
    set_safe_point(site.root, "staging", "auto", max_mb=1)  # any database is bigger than 1 MB
    t0 = sql(site.pg, site.db, "SELECT now()")[0][0]
    r = site.inv("deploy", "--env", "staging", "--image", IMAGE2)
    assert r.returncode == 0, r.stderr
    t1 = sql(site.pg, site.db, "SELECT now()")[0][0]
    point = deploy_line(site)["details"]["safe_point"]
    assert point["kind"] == "time" and point["max_mb"] == 1 and point["size_bytes"] > 1024 * 1024
    at = datetime.fromisoformat(point["at"].replace("Z", "+00:00"))
    assert t0 < at < t1  # the server's clock, read between the two
    assert "for a point-in-time restore" in r.stderr
    assert not (site.root / "var" / "backups" / "staging").exists()  # no backup was attempted
    # this branch has no PlatformBackups implementation: the time is refused, with the manual way
    rb = site.inv("rollback", "--env", "staging", "--with-data")
    assert rb.returncode == 5, rb.stderr
    assert f"--restore-target-time {point['at']}" in rb.stderr and site.image("web") == IMAGE2


def test_a_failing_backup_stops_the_deploy_before_any_migration(site):
    """No repository (db.init never ran): the backup refuses with exit 5, nothing is deployed."""
    before_log, before_events = len(site.argv_log()), len(site.events())
    version = site.version("web")
    r = site.inv("deploy", "--env", "staging", "--image", IMAGE2)
    assert r.returncode == 5, r.stderr
    assert "the safe point before web's migrations failed" in r.stderr and "nothing was deployed" in r.stderr
    assert "Traceback" not in r.stderr
    # nothing changed on Fly but the lock taken and given back (fly_changes leaves out the lock,
    # the audit trail and the image lookup), no deploy or release command ran
    assert fly_changes(site.argv_log(), before_log) == []
    assert [e for e in site.events()[before_events:] if e["type"] in ("deploy", "release_command")] == []
    assert site.version("web") == version and site.image("web") == IMAGE1
    # the lock was given back: the next deploy (with a repository) goes through
    assert site.inv("db.init", "--env", "staging").returncode == 0
    again = site.inv("deploy", "--env", "staging", "--image", IMAGE2)
    assert again.returncode == 0, again.stderr


def test_dry_deploy_prints_the_safe_point_and_takes_none(site):
    assert site.inv("db.init", "--env", "staging").returncode == 0
    r = site.inv("--dry", "deploy", "--env", "staging", "--image", IMAGE2)
    assert r.returncode == 0, r.stderr
    assert "[dry] would record safe point: a logical backup (pinned) of" in r.stderr
    assert json.loads(site.inv("db.list", "--env", "staging", "--json").stdout)["backups"] == []


def test_rollback_with_data_restores_into_a_new_database_and_swaps_only_when_confirmed(site):
    pg, db = site.pg, site.db
    assert site.inv("db.init", "--env", "staging").returncode == 0
    again = site.inv("deploy", "--env", "staging", "--image", IMAGE2)
    assert again.returncode == 0, again.stderr
    point = deploy_line(site)["details"]["safe_point"]
    # what the release's migration (and the new code) did after the safe point
    sql(pg, db, "CREATE TABLE after_the_safe_point (id int)")
    sql(pg, db, "INSERT INTO schema_migrations (version) VALUES ('29990101000000')")
    web_version = site.version("web")

    # --dry: the plan, nothing restored
    r = site.inv("--dry", "rollback", "--env", "staging", "--with-data")
    assert r.returncode == 0, r.stderr
    assert f"[dry] restore backup {point['backup_id']} into a new database" in r.stderr
    assert databases(pg, db) == [db]

    # without --confirm: restored into a new database and verified; nothing swapped or rolled back
    r = site.inv("rollback", "--env", "staging", "--with-data", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    restored = out["restored_database"]
    assert out["swapped"] is False and out["verified"]["ok"] and restored.startswith(f"{db}_restore_")
    assert databases(pg, db) == sorted([db, restored])
    assert sql(pg, restored, "SELECT to_regclass('after_the_safe_point')") == [(None,)]
    assert sql(pg, db, "SELECT to_regclass('after_the_safe_point')") != [(None,)]  # the live one untouched
    assert site.version("web") == web_version and site.image("web") == IMAGE2

    # a wrong name is refused before anything changes
    r = site.inv("rollback", "--env", "staging", "--with-data", "--confirm", "not_the_db")
    assert r.returncode == 2 and f"the live database of staging is {db!r}" in r.stderr, r.stderr
    assert len(databases(pg, db)) == 2

    # with --confirm: the apps go back, the database is swapped, the old one kept
    r = site.inv("rollback", "--env", "staging", "--with-data", "--confirm", db)
    assert r.returncode == 0, r.stderr
    assert site.image("web") == IMAGE1 and site.image("worker") == IMAGE1
    assert sql(pg, db, "SELECT to_regclass('after_the_safe_point')") == [(None,)]  # the live name: the safe point
    assert sql(pg, db, "SELECT max(version) FROM schema_migrations")[0][0] != "29990101000000"
    kept = [d for d in databases(pg, db) if d.startswith(f"{db}_pre_")]
    assert len(kept) == 1 and sql(pg, kept[0], "SELECT to_regclass('after_the_safe_point')") != [(None,)]
    assert f"kept as {kept[0]!r}" in r.stdout and "to undo the swap" in r.stdout
    line = json.loads(site.inv("audit", "--env", "staging", "--json").stdout)["entries"][0]
    assert line["task"] == "rollback" and line["result"] == "ok"
    assert line["details"]["with_data"]["swapped"] is True and line["details"]["with_data"]["previous_database"] == kept[0]
    # no release command ran on the way back (an old image's db:migrate undoes nothing)
    assert all(e["type"] != "release_command" or e["release"] <= web_version for e in site.events())


def test_rollback_with_data_without_a_recorded_safe_point_is_refused(site):
    r = site.inv("rollback", "--env", "staging", "--with-data")
    assert r.returncode == 5, r.stderr
    assert "recorded no safe point (web's first release" in r.stderr
    r = site.inv("rollback", "--env", "staging", "--confirm", site.db)
    assert r.returncode == 2 and "without --with-data" in r.stderr
