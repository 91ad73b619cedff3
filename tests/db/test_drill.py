"""dr.drill against real PostgreSQL and restic: pass, tamper, missed target, interrupt, fly argv."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from flyops.db.backup import backup
from flyops.db.catalog import MANIFEST_FILE, find_backup, list_backups, manifest_tags
from flyops.db.config import BackupSource, RepoConfig
from flyops.db.drill import (
    FlyTarget,
    LocalTarget,
    fly_drill_app_name,
    parse_postgres_create_password,
    run_drill,
)
from flyops.db.hosts import LocalHost
from flyops.db.restic import Repo
from flyops.db.sample import SAMPLE_COUNTS, SAMPLE_SMOKE_QUERIES, seed_sample
from flyops.errors import ExitCode, OpsError, TargetMissed
from flyops.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
FLAGS = json.loads((ROOT / "tests" / "fakefly" / "flags.json").read_text())
ENV = "staging"


@pytest.fixture(scope="module")
def sample_backup(pg, tmp_path_factory):
    """The sample database, backed up once into a local restic repository: (repo config, manifest)."""
    tmp = tmp_path_factory.mktemp("drill")
    db = "my_app_drill_src"
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    seed_sample(pg.url(db))
    config = RepoConfig(str(tmp / "repo"), Secret("restic-pw-" + os.urandom(6).hex()))
    manifest = backup(BackupSource(pg.url(db), ENV), config, lock_dir=tmp / "locks", init=True)
    return config, manifest


def copy_repo(config: RepoConfig, dest: Path) -> RepoConfig:
    shutil.copytree(config.location, dest)
    return RepoConfig(str(dest), config.password)


def test_drill_on_a_fresh_backup_passes_and_writes_both_reports(sample_backup, tmp_path):
    config, manifest = sample_backup
    config = copy_repo(config, tmp_path / "repo")  # recording a verification writes to the repository
    progress = tmp_path / "progress.jsonl"
    result = run_drill(env=ENV, repo_config=config, rto=3600, rpo=86400, smoke_queries=SAMPLE_SMOKE_QUERIES,
                       root=tmp_path, work_dir=tmp_path, progress_file=progress)
    assert result.outcome == "passed", result.error
    assert result.exit_code == ExitCode.OK
    result.raise_for_outcome()  # no exception
    assert [p.name for p in result.phases] == ["provision", "restore", "verify", "teardown"]
    assert "SHA-256 matches the manifest" in result.phases[1].detail  # the streamed restore hashed the stream
    assert all(p.ok for p in result.phases)
    assert result.backup["id"] == manifest["id"]
    assert result.fetched["sha256"] == manifest["sha256"]
    assert result.restored["tables"] == len(SAMPLE_COUNTS)
    assert result.restored["rows"] == sum(SAMPLE_COUNTS.values())
    assert result.rto_met is True and result.rpo_met is True
    assert result.rto_measured == pytest.approx(sum(p.seconds for p in result.phases[:3]), rel=0.5)

    json_path, md_path = map(Path, result.reports)
    assert json_path.parent == tmp_path / "var" / "drills" / ENV
    data = json.loads(json_path.read_text())
    assert data["outcome"] == "passed" and data["exit_code"] == 0
    assert data["backup"]["id"] == manifest["id"] and data["backup"]["selection"] == "latest"
    assert {c["name"] for c in data["verification"]["checks"]} >= {"integrity", "restore", "matches manifest"}
    md = md_path.read_text()
    assert "**Result: PASSED" in md and manifest["id"] in md and "| RTO (provision .. verified) |" in md
    for secret in (config.password.reveal(),):
        assert secret not in json_path.read_text() and secret not in md and secret not in progress.read_text()

    # recorded with the backup: db.list shows it verified by a restore
    (row,) = [r for r in list_backups(config, ENV) if r["id"] == manifest["id"]]
    assert row["verified"]["result"] == "pass" and row["verified"]["level"] == "restore"
    # nothing left behind in the work folder
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("flyops-")] == []


def test_missed_rto_target_exits_6_with_the_restore_done(sample_backup, tmp_path):
    config, _ = sample_backup
    result = run_drill(env=ENV, repo_config=config, rto=0.001, report_base=tmp_path / "r", work_dir=tmp_path,
                       record=False)
    assert result.verification is not None and result.verification.ok  # the restore worked
    assert result.outcome == "target_missed" and result.exit_code == ExitCode.TARGET_MISSED == 6
    assert result.rto_met is False and result.rpo_met is None
    with pytest.raises(TargetMissed, match="RTO missed"):
        result.raise_for_outcome()
    assert "TARGET MISSED" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["rto"]["met"] is False


def _largest_pack(repo_dir: Path) -> Path:
    return max((p for p in (repo_dir / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_truncated_repository_data_fails_with_exit_3(sample_backup, tmp_path):
    config = copy_repo(sample_backup[0], tmp_path / "repo")
    pack = _largest_pack(Path(config.location))  # the dump's pack, not the small manifest's
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 3)
    result = run_drill(env=ENV, repo_config=config, report_base=tmp_path / "r", work_dir=tmp_path)
    assert result.outcome == "failed"
    assert result.exit_code == ExitCode.VERIFY_FAILED == 3
    assert result.phases[1].name == "restore" and not result.phases[1].ok
    assert "restic dump" in result.error  # the fetch failed, not pg_restore
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("flyops-")] == []


def test_wrong_sha256_in_a_manifest_copy_fails_with_exit_3(sample_backup, tmp_path):
    config, manifest = sample_backup
    config = copy_repo(config, tmp_path / "repo")
    tampered = {**manifest, "sha256": "0" * 64}
    repo = Repo(config, LocalHost())
    repo.store_json(MANIFEST_FILE, tampered, manifest_tags(tampered), ENV)  # newest copy wins in the catalog
    assert repo.read_json(find_backup(repo, ENV, manifest["id"])[1]["id"], MANIFEST_FILE)["sha256"] == "0" * 64
    result = run_drill(env=ENV, repo_config=config, backup=manifest["id"], report_base=tmp_path / "r",
                       work_dir=tmp_path)
    assert result.exit_code == ExitCode.VERIFY_FAILED
    assert "does not match the manifest" in result.error
    checks = result.to_dict()["verification"]["checks"]
    assert checks and checks[0]["name"] == "integrity" and checks[0]["ok"] is False
    (row,) = [r for r in list_backups(config, ENV) if r["id"] == manifest["id"]]
    assert row["verified"]["result"] == "fail"


def test_random_selection_and_keep_leave_the_cluster_running(sample_backup, tmp_path):
    config, manifest = sample_backup
    target = LocalTarget()
    result = run_drill(env=ENV, repo_config=config, backup="random", rng=random.Random(7), keep=True,
                       target=target, report_base=tmp_path / "r", work_dir=tmp_path, record=False)
    try:
        assert result.outcome == "passed" and result.selection == "random"
        assert result.backup["id"] == manifest["id"]
        assert result.kept["port"] == target.cluster.port
        with psycopg.connect(target.cluster.url(result.restored["database"]).reveal()) as c:
            assert c.execute("SELECT count(*) FROM users").fetchone()[0] == 1200
        assert "yes (--keep)" in (tmp_path / "r.md").read_text()
    finally:
        target.teardown()


def test_unknown_backup_id_is_bad_input_before_anything_starts(sample_backup, tmp_path):
    from flyops.errors import BadInput

    with pytest.raises(BadInput):
        run_drill(env=ENV, repo_config=sample_backup[0], backup="not-an-id", work_dir=tmp_path)


# -- interrupt -------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from flyops.db.config import RepoConfig, Tools
    from flyops.db.drill import run_drill
    from flyops.secret import Secret
    repo, slow_restore, work, progress, report = sys.argv[1:6]
    r = run_drill(env="staging", repo_config=RepoConfig(repo, Secret(os.environ["DRILL_TEST_RESTIC_PASSWORD"])),
                  tools=Tools(pg_restore=slow_restore), work_dir=work, progress_file=Path(progress),
                  report_base=report, record=False)
    sys.exit(int(r.exit_code))
""")


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_restore_tears_everything_down_and_exits_130(sample_backup, tmp_path, sig):
    config, _ = sample_backup
    work = tmp_path / "work"
    work.mkdir()
    slow = tmp_path / "slow_pg_restore"
    marker = tmp_path / "restore-started"
    slow.write_text(f'#!/bin/sh\ncase "$1" in --version) exec pg_restore --version;; esac\n'
                    f'touch {marker}\nsleep 300\nexec pg_restore "$@"\n')
    slow.chmod(0o755)
    progress, report = tmp_path / "progress.jsonl", tmp_path / "report"
    env = {**os.environ, "DRILL_TEST_RESTIC_PASSWORD": config.password.reveal(), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, config.location, str(slow), str(work), str(progress),
                              str(report)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a guard against hanging, not a timing assertion
        while not marker.exists():
            assert child.poll() is None, child.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "restore never started"
            time.sleep(0.1)
        assert any(e.get("phase") == "restore" and e["event"] == "start" for e in _events(progress))
        child.send_signal(sig)
        rc = child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    output = child.stdout.read().decode(errors="replace")
    assert rc == 130, output
    events = _events(progress)
    provisioned = next(e for e in events if e["event"] == "provisioned")
    port, cluster_dir = provisioned["port"], provisioned["dir"]
    assert events[-1] == {**events[-1], "event": "done", "outcome": "interrupted", "exit_code": 130}
    assert list(work.iterdir()) == []  # no temp folder, no dump file
    assert not Path(cluster_dir).exists()  # no data directory
    assert not _port_open(port)  # nothing listens where the scratch server was
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert cluster_dir not in ps and str(slow) not in ps  # no postgres, no pg_restore, no sleep left
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["outcome"] == "interrupted" and data["exit_code"] == 130
    assert [p["name"] for p in data["phases"]][-2:] == ["restore", "teardown"]
    assert config.password.reveal() not in output


# -- fly target ------------------------------------------------------------------------------------


def _flags(argv: list[str], words: int) -> set[str]:
    return {a for a in argv[words:] if a.startswith("-")}


def test_fly_drill_app_name_is_unique_per_run_and_valid():
    from datetime import UTC, datetime

    assert fly_drill_app_name("My_App", "staging", datetime(2026, 8, 21, 2, 0, tzinfo=UTC)) == \
        "my-app-drill-staging-2608210200"


def test_fly_password_is_parsed_into_a_secret():
    out = "Postgres cluster x created\n  Username:    postgres\n  Password:    s3cr3tVALUE\n  Hostname:    x.internal\n"
    pw = parse_postgres_create_password(out)
    assert isinstance(pw, Secret) and pw.reveal() == "s3cr3tVALUE" and "s3cr3t" not in repr(pw)
    with pytest.raises(OpsError, match="no 'Password:' line"):
        parse_postgres_create_password("something else")


def test_fly_target_destroys_the_app_even_when_provisioning_fails(sample_backup, tmp_path):
    calls: list[list[str]] = []

    def run(call):
        calls.append(list(call.args))
        return "Password:    generated-pw-123\n" if call.args[:2] == ("postgres", "create") else ""

    def spawn(call):
        calls.append(list(call.args))
        raise OpsError("fly proxy did not become ready")

    target = FlyTarget(app="my-app-drill-staging-1", org="acme", region="fra", run=run, spawn=spawn)
    result = run_drill(env=ENV, repo_config=sample_backup[0], target=target, report_base=tmp_path / "r",
                       work_dir=tmp_path, record=False)
    assert [c[:2] for c in calls] == [["postgres", "create"], ["proxy", calls[1][1]], ["apps", "destroy"]]
    assert calls[-1] == ["apps", "destroy", "my-app-drill-staging-1", "--yes"]
    assert result.outcome == "failed" and result.exit_code == ExitCode.FAILURE
    assert "generated-pw-123" not in (tmp_path / "r.json").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("flyops-")] == []
