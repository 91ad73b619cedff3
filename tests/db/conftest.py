"""Fixtures for the backup tests: a hostile source database, repositories, fingerprints."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import psycopg
import pytest
import sh

from flyops.db.config import BackupSource, RepoConfig
from flyops.db.hosts import LocalHost

HOSTILE = Path(__file__).with_name("hostile_schema.sql")


def load_hostile(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(HOSTILE.read_text())


@pytest.fixture
def hostile_db(pg, make_db) -> str:
    name = make_db("src")
    load_hostile(pg.url(name).reveal())
    return name


@pytest.fixture
def small_db(pg, make_db) -> str:
    name = make_db("small")
    with psycopg.connect(pg.url(name).reveal(), autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300) g")
    return name


@pytest.fixture(scope="session")
def _repo_template(tmp_path_factory) -> RepoConfig:
    """One `restic init` per session (its key derivation costs about a second); each test gets a
    copy. A backup never creates a repository (`Repo.require`), so every test's starts initialised."""
    from flyops.db.restic import Repo

    config = RepoConfig(str(tmp_path_factory.mktemp("repo-template") / "repo"), secret("restic"))
    Repo(config, LocalHost()).init()
    return config


@pytest.fixture
def repo(tmp_path, _repo_template) -> RepoConfig:
    import shutil

    shutil.copytree(_repo_template.location, tmp_path / "repo")
    return RepoConfig(str(tmp_path / "repo"), _repo_template.password)


@pytest.fixture
def lock_dir(tmp_path) -> Path:
    return tmp_path / "locks"


def secret(prefix: str):
    from flyops.secret import Secret

    return Secret(f"{prefix}-{secrets.token_urlsafe(12)}")


def source(pg, db: str, env: str = "staging") -> BackupSource:
    return BackupSource(pg.url(db), env)


class RecordingHost(LocalHost):
    """LocalHost that remembers every script (i.e. everything that reaches argv)."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []

    def run_script(self, script, secrets=None, *, data=None, timeout=None):
        self.scripts.append(script)
        return super().run_script(script, secrets, data=data, timeout=timeout)


def schema_dump(pg, db: str, *, owners: bool = False) -> str:
    """pg_dump --schema-only (with owners and grants when `owners`), without its per-run
    \\restrict keys."""
    flags = [] if owners else ["--no-owner", "--no-acl"]
    out = str(sh.Command(str(pg.bindir / "pg_dump"))("--schema-only", *flags, "-h",
                                                     str(pg.socket_dir), "-p", str(pg.port), "-U", "postgres", db,
                                                     _tty_out=False))
    return "\n".join(line for line in out.splitlines() if not re.match(r"^\\(un)?restrict ", line))


def fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Per table: (row count, md5 of all rows ordered by their text form); plus large objects."""
    with psycopg.connect(url) as c:
        tables = c.execute("""
            SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1""").fetchall()
        out = {}
        for (t,) in tables:
            out[t] = c.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) FROM {t} x").fetchone()
        out["<large objects>"] = c.execute(
            "SELECT count(*), md5(coalesce(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid), '')) "
            "FROM pg_largeobject_metadata").fetchone()
        out["<sequences>"] = c.execute(
            "SELECT count(*), md5(coalesce(string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value, 0), ',' "
            "ORDER BY schemaname, sequencename), '')) FROM pg_sequences").fetchone()
    return out
