"""db.verify levels against real PostgreSQL and restic."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from flyops.db.backup import backup
from flyops.db.catalog import list_backups
from flyops.db.config import BackupSource, RepoConfig
from flyops.db.sample import SAMPLE_SMOKE_QUERIES, seed_sample
from flyops.db.verify import LEVELS, verify
from flyops.errors import BadInput, ExitCode, VerificationFailed
from flyops.secret import Secret

ENV = "staging"


@pytest.fixture(scope="module")
def sample_backup(pg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    db = "my_app_verify_src"
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    seed_sample(pg.url(db))
    config = RepoConfig(str(tmp / "repo"), Secret("restic-pw-" + os.urandom(6).hex()))
    manifest = backup(BackupSource(pg.url(db), ENV), config, lock_dir=tmp / "locks", init=True)
    return config, manifest


@pytest.fixture
def repo_copy(sample_backup, tmp_path):
    config, manifest = sample_backup
    shutil.copytree(config.location, tmp_path / "repo")
    return RepoConfig(str(tmp_path / "repo"), config.password), manifest


def test_fresh_passes_within_max_age_and_is_not_recorded(sample_backup):
    config, manifest = sample_backup
    r = verify("fresh", env=ENV, repo_config=config, max_age=26 * 3600)
    assert r.ok and r.exit_code == ExitCode.OK
    assert [c.name for c in r.checks] == ["fresh"] and r.backup_id == manifest["id"]
    assert r.recorded is None
    json.dumps(r.to_dict())  # serialisable


def test_fresh_fails_when_the_newest_backup_is_older_than_max_age(sample_backup):
    config, _ = sample_backup
    later = datetime.now(UTC) + timedelta(days=2)
    r = verify("fresh", env=ENV, repo_config=config, max_age=26 * 3600, now=later)
    assert not r.ok and r.exit_code == ExitCode.VERIFY_FAILED == 3
    assert "OVER the 26h00m limit" in r.checks[0].detail
    with pytest.raises(VerificationFailed) as info:
        r.raise_if_failed()
    assert info.value.code == 3


def test_fresh_with_no_backups_fails(tmp_path, sample_backup):
    config, _ = sample_backup
    r = verify("fresh", env="production", repo_config=config, max_age=3600)
    assert not r.ok and "no complete backup of production" in r.checks[0].detail


@pytest.mark.parametrize("level", ["integrity", "decode"])
def test_integrity_and_decode_pass_and_are_recorded(repo_copy, level):
    config, manifest = repo_copy
    r = verify(level, env=ENV, repo_config=config, backup=manifest["id"], read_data_subset="50%")
    assert r.ok, r.to_dict()
    names = [c.name for c in r.checks]
    assert names == (["integrity"] if level == "integrity" else ["integrity", "decode"])
    assert set(r.timings) >= {"resolve", "integrity"}
    assert r.recorded
    (row,) = list_backups(config, ENV)
    assert row["verified"] == {**row["verified"], "result": "pass", "level": level}


def test_restore_level_compares_exactly_and_runs_smoke_queries(repo_copy):
    config, manifest = repo_copy
    r = verify("restore", env=ENV, repo_config=config, max_age=3600, smoke_queries=SAMPLE_SMOKE_QUERIES)
    assert r.ok, [c.to_dict() for c in r.checks if not c.ok]
    names = [c.name for c in r.checks]
    assert names[:4] == ["fresh", "integrity", "restore", "matches manifest"]
    assert sum(n.startswith("smoke: ") for n in names) == len(SAMPLE_SMOKE_QUERIES)
    assert "all exactly as recorded" in r.checks[3].detail


def test_a_false_or_broken_smoke_query_fails_the_restore_level(repo_copy):
    config, _ = repo_copy
    r = verify("restore", env=ENV, repo_config=config, record=False,
               smoke_queries=["SELECT count(*) > 1000000 FROM users", "SELECT no_such_column FROM users",
                              "SELECT true FROM users LIMIT 2"])
    assert r.exit_code == ExitCode.VERIFY_FAILED
    bad = {c.name: c.detail for c in r.failures()}
    assert bad["smoke: SELECT count(*) > 1000000 FROM users"] == "returned False; expected true"
    assert bad["smoke: SELECT no_such_column FROM users"].startswith("error:")
    assert "returned 2 rows" in bad["smoke: SELECT true FROM users LIMIT 2"]


def test_truncated_pack_fails_integrity_with_exit_3_and_is_recorded_as_failed(repo_copy):
    config, manifest = repo_copy
    pack = max((p for p in (Path(config.location) / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.truncate(pack.stat().st_size // 2)
    for level in ("integrity", "restore"):
        r = verify(level, env=ENV, repo_config=config, backup=manifest["id"])
        assert r.exit_code == ExitCode.VERIFY_FAILED, level
        assert not next(c for c in r.checks if c.name == "integrity").ok
    assert r.checks[-1].name == "restore" and "not attempted" in r.checks[-1].detail
    (row,) = list_backups(config, ENV)
    assert row["verified"]["result"] == "fail"
    with pytest.raises(VerificationFailed, match="integrity"):
        r.raise_if_failed()


def test_bad_level_and_missing_max_age_are_bad_input(sample_backup):
    config, _ = sample_backup
    assert LEVELS == ("fresh", "integrity", "decode", "restore")
    with pytest.raises(BadInput, match="--level"):
        verify("quick", env=ENV, repo_config=config)
    with pytest.raises(BadInput, match="--max-age"):
        verify("fresh", env=ENV, repo_config=config)
