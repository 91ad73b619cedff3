"""Repository safety (issue 12, point 6) against real restic, PostgreSQL and moto's S3:
no repository is created by a backup, failures name the process that failed, a killed
upload's data is given back by prune, the backup lock lives in the repository, and `latest`
is never a pre-restore copy unless asked."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from flyops.db.backup import backup
from flyops.db.catalog import find_backup, list_backups
from flyops.db.config import RepoConfig, Tools
from flyops.db.hosts import LocalHost
from flyops.db.plans import prune_plan
from flyops.db.prune import TEMP_GRACE, prune
from flyops.db.repolock import STALE_AFTER, live_locks, repository_lock
from flyops.db.restic import Repo, classify
from flyops.db.restore import restore
from flyops.db.retention import Retention
from flyops.errors import Busy, ExitCode, OpsError, PreconditionFailed
from flyops.secret import Secret
from tests.db.conftest import secret, source


def test_a_backup_never_creates_a_repository(pg, small_db, tmp_path, lock_dir):
    missing = RepoConfig(str(tmp_path / "nothing-here"), secret("restic"))
    with pytest.raises(PreconditionFailed) as e:
        backup(source(pg, small_db), missing, lock_dir=lock_dir)
    assert e.value.code == ExitCode.PRECONDITION and "no restic repository" in e.value.message
    assert "db.init" in e.value.fix and "nothing was changed" in e.value.message
    assert not (tmp_path / "nothing-here").exists()
    first = backup(source(pg, small_db), missing, lock_dir=lock_dir, init=True)  # the first run's --init
    assert [b["id"] for b in list_backups(missing, "staging")] == [first["id"]]


def test_a_deleted_repository_is_not_recreated(pg, small_db, repo, lock_dir):
    import shutil

    backup(source(pg, small_db), repo, lock_dir=lock_dir)
    shutil.rmtree(repo.location)
    with pytest.raises(PreconditionFailed):
        backup(source(pg, small_db), repo, lock_dir=lock_dir)
    assert not Path(repo.location).exists()


def test_a_deleted_s3_repository_is_not_recreated(pg, small_db, s3, lock_dir):
    config = RepoConfig(s3.restic_location(f"gone-{os.urandom(3).hex()}"), secret("restic"),
                        Secret(s3.access_key), s3.secret_key)
    with pytest.raises(PreconditionFailed) as e:
        backup(source(pg, small_db), config, lock_dir=lock_dir)
    assert "no restic repository" in e.value.message
    assert Repo(config, LocalHost()).exists() is False


def test_wrong_password_is_blamed_on_restic_not_pg_dump(pg, small_db, repo, lock_dir):
    wrong = RepoConfig(repo.location, Secret("not-the-password"))
    with pytest.raises(OpsError) as e:
        backup(source(pg, small_db), wrong, lock_dir=lock_dir)
    assert "restic" in e.value.message and "wrong password" in e.value.message
    assert "pg_dump" not in e.value.message and "not-the-password" not in str(e.value)
    assert Repo(repo, LocalHost()).snapshots() == []  # nothing written, no lock left


def test_restic_exit_codes_and_old_texts_are_classified():
    # restic >= 0.17 (cmd/restic/main.go) and 0.14's texts (exit 1)
    assert classify(12, "") == "wrong-password" and classify(1, "Fatal: wrong password or no key found") == "wrong-password"
    assert classify(10, "") == "no-repository"
    assert classify(1, "Fatal: unable to open config file: stat /x/config: no such file or directory\n"
                       "Is there a repository at the following location?") == "no-repository"
    assert classify(11, "") == "locked" and classify(1, "unable to create lock in backend: repository is already locked "
                                                        "exclusively by PID 1") == "locked"
    assert classify(1, "Fatal: unable to save snapshot: no space left on device") is None


def test_pipeline_blames_restic_when_it_failed_and_pg_dump_got_the_broken_pipe():
    from flyops.db.backup import culprit

    assert culprit({"pg_dump": "1", "tee": "141", "restic": "137", "sha": "0"}) == "restic"
    assert culprit({"pg_dump": "1", "tee": "0", "restic": "0", "sha": "0"}) == "pg_dump"


def _du(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _pids_where(match) -> list[int]:
    """The processes whose argv (split at NULs, from /proc/<pid>/cmdline) `match` accepts."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if match(argv):
            pids.append(int(pid))
    return pids


def _restic_pids(location: str) -> list[int]:
    return _pids_where(lambda argv: argv[0].endswith(b"restic") and location.encode() in argv and b"backup" in argv)


def _writing_temp_file(pids: list[int]) -> bool:
    """Whether one of these restic processes has a `<id>-tmp-<digits>` file open: restic's local
    backend creates it, writes and syncs it, closes it, then renames it to the pack's id
    (internal/backend/local/local.go, Save), so an open one is a pack not yet in place."""
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if "-tmp-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return True
            except OSError:
                continue
    return False


STALL = "60.0417"  # the stalled pg_dump's sleep, told apart from any other sleep by its odd length


def _stalls() -> list[int]:
    return _pids_where(lambda argv: argv[:2] == [b"sleep", STALL.encode()])


def _temp_files(location: str) -> list[str]:
    return sorted(str(p.relative_to(location)) for p in Path(location).glob("data/*/*-tmp-*"))


def _kill_upload_mid_pack(pg, db, repo, lock_dir, tool) -> list[BaseException]:
    """Run a backup of `db` and SIGKILL its restic (as the OOM killer or a reboot would) after
    the dump's first pack is in place and while it writes the next one. Returns the backup's
    failure."""
    failure: list[BaseException] = []

    def run():
        try:
            backup(source(pg, db), repo, lock_dir=lock_dir, tools=Tools(pg_dump=str(tool)))
        except BaseException as e:  # noqa: BLE001
            failure.append(e)

    def packs() -> dict[str, int]:
        return {p.name: p.stat().st_size for p in Path(repo.location, "data").glob("*/*") if "-tmp-" not in p.name}

    existing = packs()
    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    pids: list[int] = []
    first_pack = False  # the backup's lock snapshot is a restic backup too: wait for the dump's first 16 MiB pack
    try:
        while t.is_alive():
            assert time.monotonic() < deadline, "restic never wrote a second pack"
            if not pids or not all(os.path.exists(f"/proc/{p}") for p in pids):
                pids = _restic_pids(repo.location)  # a scan of /proc takes milliseconds: only when they change
            writing = bool(pids) and _writing_temp_file(pids)
            if writing and first_pack:
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                break
            if not writing and not first_pack:  # between two packs, so that seeing the next one open kills at once
                first_pack = sum(n for p, n in packs().items() if p not in existing) > 16_000_000
            time.sleep(0.0005)
    finally:
        while t.is_alive() and time.monotonic() < deadline + 120:
            for pid in _stalls():  # the pg_dump stalled behind the dead restic ends now, not a minute later
                os.kill(pid, signal.SIGTERM)
            t.join(timeout=0.2)
    return failure


def test_prune_reclaims_a_killed_upload(pg, make_db, repo, lock_dir, tmp_path):
    """restic writes packs before the snapshot that names them; killed mid-upload (SIGKILL, as
    the OOM killer or a reboot would), it leaves them unreferenced, and the pack it was writing
    as a temporary file that no restic command removes (`Repo.temp_leftovers`). db.prune gives
    both back: the temporary file once nothing has written it for TEMP_GRACE."""
    db = make_db("big")
    with psycopg.connect(pg.url(db).reveal(), autocommit=True) as c:  # ~64 MB of incompressible bytes
        c.execute("CREATE TABLE noise AS SELECT g, decode(md5(random()::text) || md5(random()::text), 'hex') AS b "
                  "FROM generate_series(1, 2000000) g")
    kept = backup(source(pg, make_db("small")), repo, lock_dir=lock_dir)
    before = _du(repo.location)
    # a pg_dump whose output stalls after 100 MB (of about 150): restic, compressing it, has written
    # packs (16 MiB each) of about 50 MB by then.
    # Shorter output (the backup's other pg_dump runs) passes straight through.
    stall = tmp_path / "stall"
    stall.mkdir()
    tool = stall / "pg_dump"
    tool.write_text(f'#!/bin/bash\n[ "$1" = --version ] && exec {pg.bindir / "pg_dump"} "$@"\n'
                    f'{pg.bindir / "pg_dump"} "$@" | {{ head -c 100000000; head -c 1 > {stall}/more; '
                    f'[ -s {stall}/more ] || exit 0; sleep {STALL}; cat {stall}/more -; }}\n')
    tool.chmod(0o755)
    for _attempt in range(5):  # the pack may be renamed between seeing it open and the kill: try again
        failure = _kill_upload_mid_pack(pg, db, repo, lock_dir, tool)
        assert failure and isinstance(failure[0], OpsError) and "restic" in failure[0].message
        assert "pg_dump (" not in failure[0].message  # restic died; pg_dump only saw the broken pipe
        if _temp_files(repo.location):
            break
        print(f"attempt {_attempt + 1}: the pack was in place before restic died; again")
    temps = _temp_files(repo.location)
    assert temps, "no attempt killed restic while it was writing a pack"
    sizes = {t: Path(repo.location, t).stat().st_size for t in temps}
    left = _du(repo.location)
    # the dump's first pack, in place, and the one being written: anything from empty to a whole
    # pack, as restic creates it, preallocates it, then writes it (local.go, Save)
    assert left > before + 16_000_000 + sum(sizes.values())
    assert [b["id"] for b in list_backups(repo, "staging")] == [kept["id"]]

    now = datetime.now(UTC)
    fresh = prune(repo, "staging", Retention(), confirm=True, now=now)  # the same minute: the file is left alone
    assert fresh["applied"] and fresh["temp_files"] == [] and _temp_files(repo.location) == temps
    later = now + TEMP_GRACE + timedelta(minutes=1)
    plan = prune(repo, "staging", Retention(), now=later)
    assert {t["path"]: t["bytes"] for t in plan["temp_files"]} == sizes
    assert _temp_files(repo.location) == temps  # the plan only read
    assert any(f"remove {len(temps)} temporary files" in step
               for step in prune_plan(plan, "staging", repo.location)["steps"])
    result = prune(repo, "staging", Retention(), confirm=True, now=later)
    assert result["drop"] == [] and result["applied"]
    assert {t["path"]: t["bytes"] for t in result["temp_files"]} == sizes and _temp_files(repo.location) == []
    after = _du(repo.location)
    print(f"repository bytes: before {before}, after the killed upload {left}, after db.prune {after}")
    assert after < before + 2_000_000, (before, left, after)  # given back (index and snapshot files aside)
    assert [b["id"] for b in list_backups(repo, "staging")] == [kept["id"]]
    assert Repo(repo, LocalHost()).run("check", what="check").ok


def test_latest_is_the_database_as_it_was_not_the_pre_restore_copy(pg, small_db, repo, lock_dir):
    first = backup(source(pg, small_db), repo, lock_dir=lock_dir)
    over = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"),
                   target_db=small_db, confirm=small_db, lock_dir=lock_dir)
    assert over["backup_id"] == first["id"] and over["pre_restore_backup"]
    again = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    assert again["backup_id"] == first["id"]  # not the pinned pre-restore copy, although it is newer
    _dump, man = find_backup(Repo(repo, LocalHost()), "staging", "latest")
    assert man["id"] != over["pre_restore_backup"]
    asked = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"),
                    include_pre_restore=True)
    assert asked["backup_id"] == over["pre_restore_backup"]


def _snap(token: str, minutes_ago: float, *extra: str, holder: str = "other-host", pid: int = 1) -> dict:
    t = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"id": os.urandom(4).hex(), "time": t.strftime("%Y-%m-%dT%H:%M:%S.000000000Z"),
            "tags": ["flyops", "part=lock", "env=staging", f"lock={token}", f"holder={holder}", f"pid={pid}", *extra]}


def test_stale_lock_rules():
    fresh = _snap("a", 1)
    old = _snap("b", STALE_AFTER / 60 + 1)
    refreshed = [_snap("c", STALE_AFTER / 60 + 5), _snap("c", 2)]  # refreshed lately: live
    released = [_snap("d", 1), _snap("d", 0.5, "released")]
    dead_here = _snap("e", 1, holder="this-host", pid=2 ** 22 + 12345)  # no such pid
    alive_here = _snap("f", 1, holder="this-host", pid=os.getpid())
    live = live_locks([fresh, old, *refreshed, *released, dead_here, alive_here], hostname="this-host")
    assert set(live) == {"a", "c", "f"}


def test_repository_lock_refuses_a_second_holder_and_frees_on_exit(repo):
    r = Repo(repo, LocalHost())
    with repository_lock(r, "staging"):
        with pytest.raises(Busy) as e:
            with repository_lock(r, "staging"):
                pass
        assert e.value.code == ExitCode.BUSY and "holds the lock in" in e.value.message
        with repository_lock(r, "production"):  # per environment
            pass
    with repository_lock(r, "staging"):
        pass
    assert r.snapshots() == []  # every lock snapshot was forgotten on release
