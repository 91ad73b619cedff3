"""The streaming restore: tables shared among loaders, and what a failure mid-stream leaves."""

from __future__ import annotations

import shlex
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from flyops.db import pgconn
from flyops.db.backup import DUMP_FILE, backup, parse_kv, pg_dump_argv
from flyops.db.config import DEFAULT_TOOLS, Tools
from flyops.db.hosts import LocalHost
from flyops.db.restic import Repo
from flyops.db.restore import (
    Prefetch,
    cancel_prefetch_script,
    manifest_restore_script,
    phase_times,
    prefetch_script,
    restore,
    split_tables,
)
from flyops.errors import OpsError, PreconditionFailed
from tests.db.conftest import fingerprints, source


def test_split_puts_the_biggest_tables_on_different_loaders():
    tables = {'"public"."accounts"': 5_000_000, '"public"."notes"': 3_000_000, '"public"."branches"': 50,
              '"public"."tellers"': 500, '"public"."history"': 0}
    # largest first onto the least loaded: accounts -> 0, then notes and the small ones -> 1
    assert split_tables(tables, 2) == [[], [("public", "notes"), ("public", "tellers"), ("public", "branches"),
                                            ("public", "history")]]


def test_names_that_need_quoting_stay_with_loader_zero():
    tables = {'"Weird Schema"."Tâble"': 9_000_000, '"public"."a b"': 10, '"public"."big"': 2_000_000,
              '"public"."small"': 1}
    # loader 0 starts with the 9 M rows it must take, so the simple tables go to loader 1
    assert split_tables(tables, 2) == [[], [("public", "big"), ("public", "small")]]


def test_a_loader_for_a_sliver_of_the_rows_is_not_started():
    pgbench = {'"public"."pgbench_accounts"': 5_000_000, '"public"."pgbench_tellers"': 500,
               '"public"."pgbench_branches"': 50, '"public"."pgbench_history"': 0}
    assert split_tables(pgbench, 2) == [[], []]  # one loader: the second would read 5 M rows for 550
    assert split_tables(pgbench, 2, min_share=0) == [[], [("public", "pgbench_tellers"),
                                                         ("public", "pgbench_branches"),
                                                         ("public", "pgbench_history")]]
    two_big = {'"public"."a"': 900, '"public"."b"': 150, '"public"."c"': 5}
    assert split_tables(two_big, 2) == [[], [("public", "b"), ("public", "c")]]  # 155 of 1055 rows: 14.7 %
    assert split_tables(two_big, 3) == [[], [("public", "b")], []]  # c alone is 0.5 %: loader 0 takes it
    assert split_tables({'"public"."a"': 91, '"public"."b"': 9}, 2) == [[], []]  # 9 % is below the share


def test_one_job_is_one_loader():
    assert split_tables({'"public"."a"': 5, '"public"."b"': 3}, 1) == [[]]


def test_three_jobs_balance_by_rows():
    tables = {f'"public"."t{i}"': rows for i, rows in enumerate([90, 80, 70, 10, 5])}
    loaders = split_tables(tables, 3)
    assert len(loaders) == 3 and loaders[0] == []
    assert sorted(loaders[1] + loaders[2]) == [("public", "t1"), ("public", "t2"), ("public", "t3"), ("public", "t4")]


@pytest.fixture
def two_tables_db(pg, make_db) -> str:
    name = make_db("two")
    with psycopg.connect(pg.url(name).reveal(), autocommit=True) as c:
        c.execute("CREATE TABLE a (id int PRIMARY KEY, pad text);"
                  "INSERT INTO a SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 40000) g;"
                  "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a, note text);"
                  "INSERT INTO b SELECT g, g, md5(g::text) FROM generate_series(1, 30000) g;"
                  "CREATE TABLE c (id serial PRIMARY KEY); INSERT INTO c DEFAULT VALUES")
    return name


def test_two_loaders_restore_matches_the_source(pg, two_tables_db, repo, lock_dir):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    assert split_tables(m["tables"], 2)[1]  # loader 1 really gets a table
    r = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2)
    assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(two_tables_db).reveal())
    phases = r["phases"]  # when each phase ended, in the order the script runs them
    assert list(phases) == ["toc", "schema", "fetched", "data", "post"]
    assert 0 <= phases["toc"] <= phases["schema"] <= phases["data"] <= phases["post"]
    assert 0 < phases["fetched"] <= phases["post"]  # restic exited before post-data began


def test_phase_times_are_relative_to_the_start_and_skip_phases_not_reached():
    out = {"t_start": "100.5", "t_toc": "101.0", "t_schema": "101.25", "rc_pre": "1"}
    assert phase_times(out) == {"toc": 0.5, "schema": 0.75}
    assert phase_times({"rc_fetch": "2"}) == {}


def _wrapper(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _databases(pg) -> set[str]:
    with psycopg.connect(pg.url().reveal()) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def test_fetch_failing_midway_drops_the_new_database(pg, two_tables_db, repo, lock_dir, tmp_path):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    real = shutil.which("restic")
    # the repository "goes away" after 200 kB of the dump: restic dump fails (exit 1)
    restic = _wrapper(tmp_path, "restic", f'if [[ " $* " == *" dump "* && "$*" != *manifest.json* ]]; then\n'
                                          f'  {real} "$@" | head -c 200000; exit 1\nfi\nexec {real} "$@"')
    before = _databases(pg)
    with pytest.raises(OpsError, match="could not fetch backup"):
        restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2,
                tools=Tools(restic=restic))
    assert _databases(pg) == before


def test_a_loader_failing_stops_the_fetch_and_drops_the_new_database(pg, two_tables_db, repo, lock_dir, tmp_path):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    real = shutil.which("pg_restore") if not (pg.bindir / "pg_restore").exists() else str(pg.bindir / "pg_restore")
    marker = tmp_path / "loader-1-ran"
    pg_restore = _wrapper(tmp_path, "pg_restore", f'if [[ "$*" == *list.1* ]]; then touch {marker}; cat > /dev/null; '
                                                  f'echo "loader 1: simulated failure" >&2; exit 1; fi\n'
                                                  f'exec {real} "$@"')
    before = _databases(pg)
    with pytest.raises(OpsError, match=r"pg_restore into .* failed \(exit 1\); the target was not touched"):
        restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2,
                tools=Tools(pg_restore=pg_restore))
    assert marker.exists()
    assert _databases(pg) == before


def test_a_stream_whose_sha256_is_not_the_expected_one_gets_no_post_data(pg, two_tables_db, repo, lock_dir, make_db):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)

    def run(expected: str) -> tuple[dict, int]:
        db = make_db("shacheck")
        url = pg.url(db)
        script = manifest_restore_script(Repo(repo, LocalHost()), m["restic_snapshot"], m, DEFAULT_TOOLS, url, 2,
                                         expected_sha256=expected)
        r = LocalHost().run_script(script, {**repo.secrets(), **pgconn.libpq_secrets(url)})
        with psycopg.connect(url.reveal()) as c:
            indexes = c.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'").fetchone()[0]
        return parse_kv(r.stdout), indexes

    out, indexes = run("0" * 64)
    assert out["sha256"] == m["sha256"] and out["rc_fetch"] == "0" and out["rc_data"] == "0"
    assert out["rc_restore"] == "sha" and indexes == 0  # the data loaded, but no post-data on a mismatch
    out, indexes = run(m["sha256"])
    assert out["rc_restore"] == "0" and indexes == 3  # the primary keys of a, b and c


# -- the prefetch: the dump's fetch starts before the manifest is read -------------------------


def _leftovers(tmp: Path, repo_location: str) -> tuple[list[str], list[str]]:
    """Prefetch/restore folders left in `tmp`, and processes still running on the repository."""
    folders = sorted(p.name for p in tmp.iterdir() if p.name.startswith("flyops-"))
    procs = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if repo_location in cmd:
                procs.append(cmd.replace("\0", " "))
    return folders, procs


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """TMPDIR for the host scripts of this test only, so their leftovers can be counted."""
    tmp = tmp_path / "host-tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


def test_restore_follows_a_prefetch_started_before_the_manifest_was_read(pg, two_tables_db, repo, lock_dir,
                                                                         private_tmp):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    assert m["file"] == DUMP_FILE  # one name for every database: a restore can ask for it before the manifest
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2)
    assert r["prefetched"] is True and r["backup_id"] == m["id"]
    assert r["stream_sha256"] == m["sha256"]  # `latest` was a guess: the stream was checked
    # from the complete file, once restic had exited, and before post-data (which needs the verdict)
    assert r["phases"]["fetched"] <= r["phases"]["hashed"] <= r["phases"]["post"]
    assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(two_tables_db).reveal())
    by_id = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2)
    assert by_id["prefetched"] is True and by_id["stream_sha256"] is None  # an id is exact: restic's checks suffice
    assert "hashed" not in by_id["phases"]
    assert fingerprints(pg.url(by_id["database"]).reveal()) == fingerprints(pg.url(two_tables_db).reveal())
    assert _leftovers(private_tmp, repo.location) == ([], [])


def test_a_newer_dump_without_a_manifest_is_not_restored_in_its_place(pg, two_tables_db, repo, lock_dir, make_db):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    other = make_db("orphan")
    with psycopg.connect(pg.url(other).reveal(), autocommit=True) as c:
        c.execute("CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 10)")
    # a backup killed between its dump and its manifest: the newest dump snapshot has no manifest
    rp = Repo(repo, LocalHost())
    dump = shlex.join(pg_dump_argv(DEFAULT_TOOLS, pgconn.conninfo_without_password(pg.url(other)), None))
    store = shlex.join(rp.backup_argv(DUMP_FILE, ["part=dump", "id=20991231T0000Z-manual-dead", "env=staging",
                                                  "kind=manual"], "staging"))
    killed = LocalHost().run_script(f"{dump} | {store} > /dev/null\n",
                                    {**repo.secrets(), **pgconn.libpq_secrets(pg.url(other))})
    assert killed.ok, killed.stderr
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2)
    assert r["backup_id"] == m["id"] and r["prefetched"] is False  # the SHA-256 caught it: redone exactly
    assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(two_tables_db).reveal())


def test_a_backup_named_after_its_database_restores_without_a_prefetch(pg, two_tables_db, repo, lock_dir):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    assert Prefetch.fits(m) and not Prefetch.fits({**m, "file": f"{two_tables_db}.dump"})


def test_a_failed_preflight_stops_the_prefetch_and_leaves_nothing(pg, two_tables_db, repo, lock_dir, private_tmp,
                                                                  tmp_path):
    backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    real = shutil.which("restic")
    slow = tmp_path / "slow-fetch-started"  # the dump's fetch hangs, so only a cancel ends it
    restic = _wrapper(tmp_path, "restic", f'if [[ " $* " == *" dump "* && "$*" != *manifest.json* ]]; then\n'
                                          f'  touch {slow}; exec sleep 120\nfi\nexec {real} "$@"')
    old = _wrapper(tmp_path, "pg_restore", 'echo "pg_restore (PostgreSQL) 9.6.24"')
    with pytest.raises(PreconditionFailed, match="pg_restore"):
        restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2,
                tools=Tools(restic=restic, pg_restore=old))
    assert slow.exists()  # the prefetch had started...
    folders, procs = _leftovers(private_tmp, repo.location)
    assert folders == [] and not [p for p in procs if "sleep" in p or " dump " in p]  # ...and is gone


def test_cancelling_a_prefetch_stops_its_fetch(private_tmp):
    token = "t" + "0" * 11
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(LocalHost().run_script, prefetch_script(token, ["sleep", "60"]))
        folder = private_tmp / f"flyops-prefetch-{token}"
        deadline = time.monotonic() + 10
        while not (folder / "fetch.pid").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int((folder / "fetch.pid").read_text())
        LocalHost().run_script(cancel_prefetch_script(token, started=True))
        job.result(timeout=10)  # the prefetch script ends once its folder is gone...
    assert not folder.exists()
    assert not Path(f"/proc/{pid}").exists() or "sleep" not in Path(f"/proc/{pid}/cmdline").read_text()


def test_a_prefetch_that_fails_is_given_up_and_the_restore_fetches_exactly(pg, two_tables_db, repo, lock_dir,
                                                                           tmp_path, private_tmp):
    m = backup(source(pg, two_tables_db), repo, lock_dir=lock_dir)
    real = shutil.which("restic")
    # only the prefetch asks for a dump by tag (`--tag ...part=dump... latest`): that one fails
    restic = _wrapper(tmp_path, "restic", f'if [[ "$*" == *part=dump* ]]; then echo "simulated: bucket gone" >&2; '
                                          f'exit 1; fi\nexec {real} "$@"')
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"), jobs=2,
                tools=Tools(restic=restic))
    assert r["prefetched"] is False and r["backup_id"] == m["id"]
    assert fingerprints(pg.url(r["database"]).reveal()) == fingerprints(pg.url(two_tables_db).reveal())
    assert _leftovers(private_tmp, repo.location) == ([], [])
