"""db.* tasks end to end: a real PostgreSQL, a real restic repository, the stand-in for `fly proxy`."""

import json
from datetime import UTC, datetime
from urllib.parse import urlparse

import pytest

from flyops.db.sample import seed_sample
from tests.helpers import edit, write_env

RESTIC_PW = "restic-pw-for-tests-91x"


@pytest.fixture
def local(ops, pg, make_db):
    """env/local.env pointing at a seeded database on the test cluster."""
    db = make_db("app")
    url = pg.url(db).reveal()
    seed_sample(url)
    write_env(ops.root, "local", {"DATABASE_URL": url, "RESTIC_PASSWORD": RESTIC_PW})
    ops.url = url
    ops.db = db
    init = ops.inv("db.init", "--env", "local")
    assert init.returncode == 0 and "created restic repository" in init.stdout, init.stderr
    return ops


def test_backup_list_restore_prune_round_trip(local, pg):
    r = local.inv("db.backup", "--env", "local", "--reason", "before upgrade", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["environment"] == "local" and m["kind"] == "manual" and m["reason"] == "before upgrade"
    assert m["tables"] and len(m["sha256"]) == 64 and m["schema_migrations_head"]

    listed = json.loads(local.inv("db.list", "--env", "local", "--json").stdout)["backups"]
    assert [b["id"] for b in listed] == [m["id"]]
    assert listed[0]["retention"]["keep"]
    # db.list says until when retention keeps it (7 dailies: about a week, with a backup a day)
    expires = datetime.strptime(listed[0]["retention"]["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires > datetime.now(UTC) and "one backup a day" in listed[0]["retention"]["expires_assuming"]
    table = local.inv("db.list", "--env", "local")
    assert "until ~" in table.stdout and "'until' dates assume one backup a day" in table.stdout

    # --if-older-than: a fresh backup makes the hourly cron line a no-op
    skip = local.inv("db.backup", "--env", "local", "--if-older-than", "20h", "--json")
    assert skip.returncode == 0 and json.loads(skip.stdout)["skipped"] is True

    restored = local.inv("db.restore", "--env", "local", "--json")
    assert restored.returncode == 0, restored.stderr
    out = json.loads(restored.stdout)
    assert out["database"].startswith(local.db) and "_restore_" in out["database"]
    # seconds into the streamed restore; `latest` was fetched before the manifest named it, so hashed
    assert set(out["phases"]) == {"toc", "schema", "data", "fetched", "hashed", "post"}
    assert pg.psql("SELECT count(*) FROM users", dbname=out["database"]) == pg.psql("SELECT count(*) FROM users", dbname=local.db)

    pr = local.inv("db.prune", "--env", "local")
    assert pr.returncode == 0 and "keep 1" in pr.stdout
    for value in (RESTIC_PW, urlparse(local.url).password):
        assert value not in r.stdout + r.stderr + restored.stdout + restored.stderr + pr.stdout


def test_restore_over_live_needs_confirm(local, pg):
    assert local.inv("db.backup", "--env", "local").returncode == 0
    refused = local.inv("db.restore", "--env", "local", "--to", local.url)
    assert refused.returncode == 5 and f"--confirm {local.db}" in refused.stderr
    text = local.inv("db.restore", "--env", "local")  # into a new database, for a person at a terminal
    assert text.returncode == 0, text.stderr
    assert "schema created at" in text.stdout and "indexes and constraints built at" in text.stdout
    ok = local.inv("db.restore", "--env", "local", "--to", local.url, "--confirm", local.db, "--json")
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["database"] == local.db and out["previous_database"].startswith(f"{local.db}_pre_")
    assert out["pre_restore_backup"]
    kinds = {b["kind"] for b in json.loads(local.inv("db.list", "--env", "local", "--json").stdout)["backups"]}
    assert kinds == {"manual", "pre-restore"}


def test_bad_input_is_exit_2(local):
    r = local.inv("db.backup", "--env", "local", "--if-older-than", "soon")
    assert r.returncode == 2 and "--if-older-than" in r.stderr
    (local.root / "env/local.env").unlink()
    r = local.inv("db.backup", "--env", "local")
    assert r.returncode == 2 and "env/local.env does not exist" in r.stderr and "chmod 600" in r.stderr


def test_wrong_repository_password_fails_clearly(local):
    assert local.inv("db.backup", "--env", "local").returncode == 0
    write_env(local.root, "local", {"DATABASE_URL": local.url, "RESTIC_PASSWORD": "not-the-password"})
    r = local.inv("db.list", "--env", "local")
    assert r.returncode != 0 and "password" in r.stderr.lower() and "not-the-password" not in r.stderr


def test_fly_database_is_reached_through_fly_proxy(ops, pg, make_db):
    db = make_db("my_app")
    seed_sample(pg.url(db).reveal())
    edit(ops.root / "fly/stack.toml", 'name = "my_app"', f'name = "{db}"')
    values = dict(json.loads(json.dumps({})))
    write_env(ops.root, "staging", {**values, "POSTGRES_PASSWORD": pg.password.reveal(), "RESTIC_PASSWORD": RESTIC_PW})
    assert ops.fly("apps", "create", "my-app-staging-db", "--org", "personal").returncode == 0
    (ops.home / "services.json").write_text(json.dumps({"my-app-staging-db.internal:5432": f"127.0.0.1:{pg.port}"}))
    r = ops.inv("db.backup", "--env", "staging", "--json", "--init")  # the first run's flag creates the repository
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["database"] == db
    proxies = [e["argv"] for e in ops.argv_log() if e["argv"][0] == "proxy"]
    assert len(proxies) == 1 and proxies[0][1].endswith(":5432")
    assert pg.password.reveal() not in (ops.home / "argv.log").read_text()


def _slow_tool(tmp_path, name: str, real: str) -> str:
    """A folder with `name` that waits (announcing itself) before exec'ing the real tool."""
    folder = tmp_path / f"slow-{name}"
    folder.mkdir()
    marker = folder / "started"
    tool = folder / name
    tool.write_text(f"#!/bin/bash\n[ \"$1\" = --version ] || {{ touch {marker}; sleep 30; }}\nexec {real} \"$@\"\n")
    tool.chmod(0o755)
    return str(folder)


def _wait_for(path, timeout: float = 60) -> None:
    import time
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _wait_for_empty(folder, timeout: float = 10) -> None:
    """Wait until no pipeline work folder is left in `folder` (the scripts' TMPDIR); the
    backup lock folder stays, by design."""
    import time
    deadline = time.monotonic() + timeout
    while left := sorted(p.name for p in folder.iterdir() if p.name != "flyops-locks"):
        assert time.monotonic() < deadline, f"left behind: {left}"
        time.sleep(0.1)


def _sigterm_inv(local, *args: str, path_first: str, **extra_env: str):
    import signal
    import subprocess

    from tests.tasks.conftest import INV, REPO
    env = local.env(PATH=f"{path_first}:{local.env()['PATH']}", **extra_env)
    return subprocess.Popen([str(INV), "--search-root", str(REPO), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE), signal.SIGTERM


def test_sigterm_during_a_restore_drops_the_half_restored_database(local, pg, tmp_path):
    import shutil
    assert local.inv("db.backup", "--env", "local").returncode == 0
    folder = _slow_tool(tmp_path, "pg_restore", shutil.which("pg_restore") or str(pg.bindir / "pg_restore"))
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    proc, sig = _sigterm_inv(local, "db.restore", "--env", "local", path_first=folder, TMPDIR=str(host_tmp))
    _wait_for(tmp_path / "slow-pg_restore" / "started")
    restoring = pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_restore\\_%'")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert int(restoring) >= 1  # the new database existed while pg_restore ran...
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{local.db}\\_restore\\_%'").strip() == "0"  # ...and is gone
    _wait_for_empty(host_tmp)  # the prefetch's and the restore script's folders are removed too


def test_sigterm_during_a_backup_records_nothing_and_frees_the_lock(local, pg, tmp_path):
    folder = _slow_tool(tmp_path, "pg_dump", str(pg.bindir / "pg_dump"))
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    proc, sig = _sigterm_inv(local, "db.backup", "--env", "local", path_first=folder, TMPDIR=str(host_tmp))
    _wait_for(tmp_path / "slow-pg_dump" / "started")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    _wait_for_empty(host_tmp)  # the pipeline was ended with inv, and its folder removed
    listed = json.loads(local.inv("db.list", "--env", "local", "--json").stdout)["backups"]
    assert listed == []
    again = local.inv("db.backup", "--env", "local", "--json")  # the lock was released
    assert again.returncode == 0, again.stderr


def test_a_scheduled_backup_reads_its_token_from_a_file_and_fails_loudly_when_not_due(ops, pg, make_db, tmp_path):
    """The crontab/systemd jobs pass the token as a chmod-600 file (FLY_API_TOKEN_FILE or the
    systemd credential), never argv. A deploy token of the database app is enough for
    `fly proxy`. A run whose token no longer works fails with exit 5 even when the backup is
    not due yet: the old "skipped" exit 0 hid it until the next backup was due."""
    import sys

    from tests.helpers import REPO

    sys.path.insert(0, str(REPO / "tests/fakefly"))
    from fakefly.tokens import make_token

    db = make_db("my_app")
    seed_sample(pg.url(db).reveal())
    edit(ops.root / "fly/stack.toml", 'name = "my_app"', f'name = "{db}"')
    write_env(ops.root, "staging", {"POSTGRES_PASSWORD": pg.password.reveal(), "RESTIC_PASSWORD": RESTIC_PW})
    assert ops.fly("apps", "create", "my-app-staging-db", "--org", "personal").returncode == 0
    (ops.home / "services.json").write_text(json.dumps({"my-app-staging-db.internal:5432": f"127.0.0.1:{pg.port}"}))
    token_file = tmp_path / "staging.fly-token"
    token_file.write_text(make_token(ops.home, "app", app="my-app-staging-db") + "\n")
    token_file.chmod(0o600)
    assert ops.inv("db.init", "--env", "staging").returncode == 0  # the repository is made once, by hand
    scheduled = ("db.backup", "--env", "staging", "--kind", "scheduled", "--if-older-than", "20h", "--json")
    r = ops.inv(*scheduled, FLY_API_TOKEN="", FLY_API_TOKEN_FILE=str(token_file))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "scheduled"
    r = ops.inv(*scheduled, FLY_API_TOKEN="", FLY_API_TOKEN_FILE=str(token_file))
    assert r.returncode == 0 and json.loads(r.stdout)["skipped"] is True  # not due, token fine
    # the token expired (or was revoked): not due, and still loud
    token_file.write_text(make_token(ops.home, "app", app="my-app-staging-db", expires_in=-1))
    r = ops.inv(*scheduled, FLY_API_TOKEN="", FLY_API_TOKEN_FILE=str(token_file))
    assert r.returncode == 5, (r.returncode, r.stdout, r.stderr)
    assert "not allowed" in r.stderr and "skipped" not in r.stdout
    # no token at all: exit 5 naming where it goes
    r = ops.inv(*scheduled, FLY_API_TOKEN="")
    assert r.returncode == 5 and "FLY_API_TOKEN_FILE" in r.stderr
    # a token file others can read is refused
    token_file.chmod(0o644)
    r = ops.inv(*scheduled, FLY_API_TOKEN="", FLY_API_TOKEN_FILE=str(token_file))
    assert r.returncode == 5 and "chmod 600" in r.stderr
    argv = (ops.home / "argv.log").read_text()
    assert "fm2_" not in argv


def test_restore_as_a_role_without_createdb_is_one_message_exit_5(local, pg):
    """A socket URL as libpq takes it (postgresql:///db?host=...), an application role without
    CREATEDB: one message naming the fix, the documented exit code, no traceback, nothing dropped."""
    assert local.inv("db.backup", "--env", "local").returncode == 0
    role = f"app_{local.db}"
    pg.psql(f'CREATE ROLE "{role}" LOGIN')
    try:
        to = f"postgresql:///{local.db}_new?host={pg.socket_dir}&port={pg.port}&user={role}"
        r = local.inv("db.restore", "--env", "local", "--to", to)
        assert r.returncode == 5, r.stderr
        assert "permission denied to create database" in r.stderr and "CREATEDB" in r.stderr
        assert "Traceback" not in r.stderr
        assert pg.psql("SELECT count(*) FROM users", dbname=local.db)  # the source is there
    finally:
        pg.psql(f'DROP ROLE "{role}"')
