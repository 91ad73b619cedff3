"""Backup → list → restore → compare, against real PostgreSQL, restic, moto S3 and sshd."""

from __future__ import annotations

import psycopg

from flyops.db.backup import backup
from flyops.db.catalog import list_backups, record_verification
from flyops.db.config import RepoConfig
from flyops.db.hosts import LocalHost, SshHost
from flyops.db.restic import Repo
from flyops.db.restore import restore
from flyops.db.verify import check_integrity, compare_with_manifest, decode
from tests.db.conftest import RecordingHost, fingerprints, schema_dump, secret, source


def test_hostile_round_trip_matches_table_by_table(pg, hostile_db, repo, lock_dir):
    host = RecordingHost()
    m = backup(source(pg, hostile_db), repo, host=host, reason="round trip", lock_dir=lock_dir)

    assert m["schema_migrations_head"] == "20251120093000"
    assert m["large_objects"] == 12
    assert {e["name"] for e in m["extensions"]} == {"citext", "hstore", "pgcrypto"}
    assert m["tables"]['"public"."users"'] == 500
    assert m["tables"]['"billing"."invoices_2025"'] + m["tables"]['"billing"."invoices_2024"'] \
        + m["tables"]['"billing"."invoices_rest"'] == 1200
    assert m["tables"]['"Weird Schema"."Tâble "Quoted""'] == 50
    assert len(m["sha256"]) == 64 and m["bytes"] > 0 and m["logical_bytes"] == m["bytes"]

    rows = list_backups(repo, "staging")
    assert [r["id"] for r in rows] == [m["id"]]
    assert rows[0]["kind"] == "manual" and rows[0]["bytes"] == m["bytes"] and rows[0]["verified"] is None

    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), host=host, jobs=2)
    new = r["database"]
    assert new.startswith(f"{hostile_db}_restore_")
    assert schema_dump(pg, new) == schema_dump(pg, hostile_db)
    assert fingerprints(pg.url(new).reveal()) == fingerprints(pg.url(hostile_db).reveal())
    assert compare_with_manifest(pg.url(new), m)["ok"]

    repo_obj = Repo(repo, LocalHost())
    assert check_integrity(repo_obj, m)["ok"]
    assert decode(repo_obj, m["id"], env="staging")["ok"]
    record_verification(repo, "staging", m["id"], {"ok": True, "level": "restore", "problems": []})
    assert list_backups(repo, "staging")[0]["verified"]["result"] == "pass"

    # nothing secret ever reached argv: every script run is free of the DB and restic passwords
    pw = pg.password.reveal()
    for script in host.scripts:
        assert pw not in script and repo.password.reveal() not in script


def test_compare_finds_a_changed_restore(pg, small_db, repo, lock_dir):
    m = backup(source(pg, small_db), repo, lock_dir=lock_dir)
    r = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    with psycopg.connect(pg.url(r["database"]).reveal(), autocommit=True) as c:
        c.execute("DELETE FROM t WHERE id <= 3")
    result = compare_with_manifest(pg.url(r["database"]), m)
    assert not result["ok"] and '"public"."t": 297 rows, manifest says 300' in result["problems"][0]


def test_backup_to_s3(pg, hostile_db, s3, lock_dir):
    repo = RepoConfig(s3.restic_location("staging-test"), secret("restic"), secret("AKID"), s3.secret_key)
    host = RecordingHost()
    m = backup(source(pg, hostile_db), repo, host=host, lock_dir=lock_dir, init=True)
    assert [r["id"] for r in list_backups(repo, "staging")] == [m["id"]]
    r = restore("staging::latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(hostile_db).reveal())
    assert r["prefetched"] is True
    assert all(s3.secret_key.reveal() not in s for s in host.scripts)


def test_on_ssh_host_runs_the_same_backup_path(pg, small_db, repo, lock_dir, sshd):
    host = SshHost(sshd.host, user=sshd.user, port=sshd.port, key_filename=str(sshd.key_path))
    m = backup(source(pg, small_db), repo, host=host, lock_dir=lock_dir)
    assert m["ran_on"] == f"root@127.0.0.1:{sshd.port}"
    rows = list_backups(repo, "staging", host=host)
    assert [r["id"] for r in rows] == [m["id"]]
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), host=host)
    assert compare_with_manifest(pg.url(r["database"]), m)["ok"]
    assert r["prefetched"] is True  # the prefetch ran in its own SSH session beside the manifest's


def test_counts_match_the_dump_while_writers_insert(pg, make_db, repo, lock_dir):
    """The manifest's counts run in a thread while pg_dump streams; both read the exported
    snapshot, so rows committed during the backup are in neither, and the restore matches."""
    import threading

    name = make_db("busy")
    url = pg.url(name).reveal()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE big (id bigserial PRIMARY KEY, pad text);"
                  "INSERT INTO big (pad) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 60000) g;"
                  "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
    stop = threading.Event()
    inserted = [0]

    def writer():
        with psycopg.connect(url, autocommit=True) as w:
            while not stop.is_set():
                w.execute("INSERT INTO events DEFAULT VALUES; INSERT INTO big (pad) VALUES ('x')")
                inserted[0] += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        m = backup(source(pg, name), repo, lock_dir=lock_dir)
    finally:
        stop.set()
        t.join()
    assert inserted[0] > 0
    with psycopg.connect(url) as c:
        after = c.execute("SELECT count(*) FROM events").fetchone()[0]
    assert m["tables"]['"public"."big"'] >= 60000 and m["tables"]['"public"."events"'] < after
    r = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    assert compare_with_manifest(pg.url(r["database"]), m)["ok"]
