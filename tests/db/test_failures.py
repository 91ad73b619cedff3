"""What must not happen: half backups listed, concurrent runs, unsafe restores, leaked secrets."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading

import psycopg
import pytest

from flyops.db.backup import LOCK_CLASS, backup, backup_lock
from flyops.db.catalog import list_backups, manifest_tags, should_skip
from flyops.db.config import BackupSource, Notify, RepoConfig, Tools
from flyops.db.hosts import LocalHost
from flyops.db.restic import Repo
from flyops.db.restore import parse_ref, restore
from flyops.errors import BadInput, Busy, ExitCode, OpsError, PreconditionFailed
from flyops.secret import Secret
from tests.db.conftest import fingerprints, secret, source


def _fake_pg_dump(tmp_path, pg, body: str) -> str:
    path = tmp_path / "pg_dump"
    real = pg.bindir / "pg_dump"
    path.write_text(f'#!/bin/bash\nif [ "${{1:-}}" = --version ]; then exec {real} --version; fi\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Hook.received.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_truncated_pg_dump_leaves_no_backup_and_notifies(pg, small_db, repo, lock_dir, tmp_path):
    real = pg.bindir / "pg_dump"
    fake = _fake_pg_dump(tmp_path, pg, f'{real} "$@" | head -c 3000\nexit 1')
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = Secret(f"http://127.0.0.1:{server.server_port}/hook?token=abc123")
    try:
        with pytest.raises(OpsError) as e:
            backup(source(pg, small_db), repo, tools=Tools(pg_dump=fake), lock_dir=lock_dir,
                   notify=Notify(failure_webhook=hook))
    finally:
        server.shutdown()
    assert e.value.code == ExitCode.FAILURE and "pg_dump" in e.value.message
    assert list_backups(repo, "staging") == []
    assert Repo(repo, LocalHost()).snapshots() == []  # the partial dump snapshot was forgotten
    assert len(_Hook.received) == 1 and "staging" in _Hook.received[0]
    assert pg.password.reveal() not in _Hook.received[0] + str(e.value)


def test_old_pg_dump_is_a_precondition(pg, small_db, repo, lock_dir, tmp_path):
    fake = tmp_path / "pg_dump"
    fake.write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 9.6.24"\n')
    fake.chmod(0o755)
    with pytest.raises(PreconditionFailed) as e:
        backup(source(pg, small_db), repo, tools=Tools(pg_dump=str(fake)), lock_dir=lock_dir)
    assert e.value.code == ExitCode.PRECONDITION == 5


def test_second_backup_is_busy_local_lock(pg, small_db, repo, lock_dir):
    with backup_lock("staging", lock_dir):
        with pytest.raises(Busy) as e:
            backup(source(pg, small_db), repo, lock_dir=lock_dir)
    assert e.value.code == 4


def test_second_backup_is_busy_advisory_lock(pg, small_db, repo, lock_dir):
    with psycopg.connect(pg.url(small_db).reveal(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, hashtext('flyops-backup:staging'))", (LOCK_CLASS,))
        with pytest.raises(Busy):
            backup(source(pg, small_db), repo, lock_dir=lock_dir)
    assert list_backups(repo, "staging") == [] if Repo(repo, LocalHost()).exists() else True


def test_wrong_repository_password(pg, small_db, repo, lock_dir):
    backup(source(pg, small_db), repo, lock_dir=lock_dir)
    wrong = RepoConfig(repo.location, Secret("not-the-password"))
    with pytest.raises(OpsError) as e:
        list_backups(wrong, "staging")
    assert "wrong password" in e.value.message and "not-the-password" not in str(e.value)


def test_unreachable_database_names_host_not_password(repo, lock_dir):
    from flyops.procs import free_port

    src = BackupSource(Secret(f"postgres://app:supersecretpw@127.0.0.1:{free_port()}/app"), "staging")
    with pytest.raises(OpsError) as e:
        backup(src, repo, lock_dir=lock_dir)
    assert "127.0.0.1" in str(e.value) and "supersecretpw" not in str(e.value)


def test_unreachable_repository_fails_fast_and_changes_nothing(pg, small_db, lock_dir):
    """restic >= 0.16 would retry a dead S3 endpoint for 15 minutes; the probe answers at once."""
    from flyops.procs import free_port

    port = free_port()  # nothing listens there
    dead = RepoConfig(f"s3:http://127.0.0.1:{port}/backups/staging", secret("restic"), secret("AKID"), secret("sk"))
    for call in (lambda: backup(source(pg, small_db), dead, lock_dir=lock_dir),
                 lambda: list_backups(dead, "staging"),
                 lambda: restore("latest", env="staging", repos={"staging": dead}, server_url=pg.url())):
        with pytest.raises(OpsError) as e:
            call()
        assert e.value.code == ExitCode.FAILURE
        assert f"cannot connect to 127.0.0.1:{port}" in e.value.message and "nothing was changed" in e.value.message
        for value in (dead.password, dead.aws_secret_access_key, pg.password):
            assert value.reveal() not in str(e.value) + (e.value.fix or "")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_repository_out_of_space_keeps_earlier_backups(pg, small_db, make_db, lock_dir, tmp_path):
    import subprocess

    folder = tmp_path / "tiny"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        repo = RepoConfig(str(folder / "repo"), secret("restic"))
        first = backup(source(pg, small_db), repo, lock_dir=lock_dir, init=True)  # fits
        big = make_db("big")
        with psycopg.connect(pg.url(big).reveal(), autocommit=True) as c:  # ~6 MiB even compressed
            c.execute("CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS h "
                      "FROM generate_series(1, 200000) g")
        with pytest.raises(OpsError) as e:
            backup(source(pg, big), repo, lock_dir=lock_dir)
        assert "no space left on device" in e.value.message.lower() and "no backup was recorded" in e.value.message
        assert "free space" in e.value.fix
        assert [b["id"] for b in list_backups(repo, "staging")] == [first["id"]]  # nothing half-listed
        r = restore(first["id"], env="staging", repos={"staging": repo}, server_url=pg.url())  # nothing lost
        assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(small_db).reveal())
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_bad_inputs():
    with pytest.raises(BadInput):
        BackupSource(Secret("mysql://u:p@h/db"), "staging")
    with pytest.raises(BadInput):
        RepoConfig("relative/path", Secret("pw"))
    with pytest.raises(BadInput):
        RepoConfig("s3:http://127.0.0.1:9000/bucket", Secret("pw"))  # no keys
    with pytest.raises(BadInput):
        parse_ref("../etc", "staging")
    assert parse_ref("production::latest", "staging") == ("production", "latest")
    assert parse_ref("20261126T120005Z-manual-3f9c", "staging") == ("staging", "20261126T120005Z-manual-3f9c")


def test_if_older_than(pg, small_db, repo, lock_dir):
    assert not should_skip(repo, "staging", 3600)
    backup(source(pg, small_db), repo, kind="scheduled", lock_dir=lock_dir)
    assert should_skip(repo, "staging", 3600)
    assert not should_skip(repo, "staging", 0)


# -- restore safety ---------------------------------------------------------------------------


def test_restore_over_live_db_needs_the_exact_confirm_name(pg, small_db, repo, lock_dir):
    backup(source(pg, small_db), repo, lock_dir=lock_dir)
    for confirm in (None, "something-else"):
        with pytest.raises(PreconditionFailed) as e:
            restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url(),
                    target_db=small_db, confirm=confirm, lock_dir=lock_dir)
        assert f"--confirm {small_db}" in e.value.fix
    assert len(list_backups(repo, "staging")) == 1  # no pre-restore backup was taken


def test_restore_of_an_unknown_or_missing_backup_is_bad_input(pg, small_db, repo, lock_dir):
    repos = {"staging": repo, "production": RepoConfig(repo.location, repo.password)}
    backup(source(pg, small_db), repo, lock_dir=lock_dir)
    databases_before = _databases(pg)
    with pytest.raises(BadInput, match="no complete backup of production"):
        restore("production::latest", env="staging", repos=repos, server_url=pg.url())
    with pytest.raises(BadInput, match="'20200101T0000Z-manual-abcd' not found among the complete backups of staging"):
        restore("20200101T0000Z-manual-abcd", env="staging", repos=repos, server_url=pg.url())
    assert _databases(pg) == databases_before  # nothing was created on the server


def _databases(pg) -> set[str]:
    with psycopg.connect(pg.url().reveal()) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def test_restore_with_confirm_swaps_and_keeps_the_old_db(pg, small_db, make_db, repo, lock_dir):
    prod = RepoConfig(repo.location + "-prod", secret("restic-prod"))
    prod_db = make_db("prod")
    from tests.db.conftest import load_hostile

    load_hostile(pg.url(prod_db).reveal())
    m = backup(source(pg, prod_db, env="production"), prod, lock_dir=lock_dir, init=True)
    before_target = fingerprints(pg.url(small_db).reveal())

    r = restore("production::latest", env="staging", repos={"staging": repo, "production": prod},
                server_url=pg.url(), target_db=small_db, confirm=small_db, lock_dir=lock_dir)
    assert r["database"] == small_db and r["previous_database"].startswith(f"{small_db}_pre_")
    assert fingerprints(pg.url(r["previous_database"]).reveal()) == before_target
    restored = fingerprints(pg.url(small_db).reveal())
    source_fp = fingerprints(pg.url(prod_db).reveal())
    assert restored.pop('public.ar_internal_metadata') != source_fp.pop('public.ar_internal_metadata')
    assert restored == source_fp
    with psycopg.connect(pg.url(small_db).reveal()) as c:
        assert c.execute("SELECT value FROM ar_internal_metadata WHERE key='environment'").fetchone()[0] == "staging"
    staging = list_backups(repo, "staging")
    assert [(b["kind"], b["pinned"], b["id"]) for b in staging] == [("pre-restore", True, r["pre_restore_backup"])]
    assert m["environment"] == "production"


def test_missing_extension_stops_before_touching_the_target(pg, small_db, repo, lock_dir):
    m = backup(source(pg, small_db), repo, lock_dir=lock_dir)
    r = Repo(repo, LocalHost())
    # forge the manifest to need an extension no server has (the dump itself is untouched)
    [man] = r.snapshots("part=manifest")
    r.forget([man["id"]])
    m["extensions"].append({"name": "no_such_extension", "version": "1.0", "schema": "public"})
    r.store_json("manifest.json", m, manifest_tags(m), "staging")
    with psycopg.connect(pg.url().reveal()) as c:
        dbs_before = c.execute("SELECT count(*) FROM pg_database").fetchone()[0]
    with pytest.raises(PreconditionFailed) as e:
        restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url(),
                target_db=small_db, confirm=small_db, lock_dir=lock_dir)
    assert "no_such_extension" in e.value.message
    with psycopg.connect(pg.url().reveal()) as c:
        assert c.execute("SELECT count(*) FROM pg_database").fetchone()[0] == dbs_before
    assert [b["kind"] for b in list_backups(repo, "staging")] == ["manual"]  # no pre-restore taken


def test_scripts_and_argv_carry_no_secrets(pg, small_db, s3):
    from flyops.db.backup import backup_script, pg_dump_argv
    from flyops.db.pgconn import conninfo_without_password
    from flyops.db.restore import pg_restore_argv, restore_script

    repo = RepoConfig(s3.restic_location("x"), secret("restic"), secret("AKID"), s3.secret_key)
    r = Repo(repo, LocalHost())
    url = pg.url(small_db)
    texts = [
        backup_script(pg_dump_argv(Tools(), conninfo_without_password(url), "00000003-1"),
                      r.backup_argv("x.dump", ["id=1"], "staging")),
        restore_script(r.argv("dump", "abc", "/x.dump"), 123, pg_restore_argv(Tools(), conninfo_without_password(url), 2),
                       [[], [("public", "t")]]),
        json.dumps(r.argv("snapshots", "--json")),
    ]
    for t in texts:
        for s in (pg.password, repo.password, s3.secret_key):
            assert s.reveal() not in t
    assert os.environ.get("RESTIC_PASSWORD") is None
