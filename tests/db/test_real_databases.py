"""PostgreSQL's own regression database (built by scripts/regression-db from Debian's source
package for the installed major: the core installcheck schedule; cached under var/regression/)
through db.backup, db.restore and dr.drill, required exact: the schema dumped with owners and
grants, every table's rows (fingerprints), and the manifest's owners, ACLs, default privileges,
SECURITY DEFINER functions, policies, settings and extension versions.

What pg_dump itself cannot keep. Measured by comparing `manifest.database_facts` of the
database pg_regress left with a plain `pg_restore` of its dump (PostgreSQL 15.18's schedule):
- its database settings: pg_regress sets lc_messages, lc_monetary, lc_numeric, lc_time,
  bytea_output and timezone_abbreviations with `ALTER DATABASE ... SET` (pg_regress.c
  create_database), and pg_dump without --create dumps no database properties (pg_dump.c
  dumpDatabase; "Notes" in the pg_dump documentation). The only difference found; the
  manifest records them and flyops' restores apply them, so the copy below gets the same
  settings and the round trip compares them.
- the physical column layout: 74 dropped columns (attisdropped) leave gaps in attnum that a
  dump does not reproduce (it dumps the live columns only); invisible to SQL and not compared.
- planner statistics (pg_statistic): not dumped; the restore runs ANALYZE.
- extension ownership (pg_dump.c dumpExtension writes no owner; the restoring role owns
  them): the regression database has only plpgsql, and flyops does not compare extension owners.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from flyops.db import database
from flyops.db.backup import backup
from flyops.db.drill import LocalTarget, run_drill
from flyops.db.restore import restore
from flyops.db.verify import compare_with_manifest
from tests.db.conftest import fingerprints, schema_dump, source

ROOT = Path(__file__).resolve().parents[2]
REGRESS_SETTINGS = ("lc_messages TO 'C'", "lc_monetary TO 'C'", "lc_numeric TO 'C'", "lc_time TO 'C'",
                    "bytea_output TO 'hex'", "timezone_abbreviations TO 'Default'")


@pytest.fixture(scope="session")
def regression_dump(pg) -> tuple[Path, str]:
    """(the cached dump, pg_dumpall --roles-only of its cluster), built once per major."""
    major = pg.server_version_num() // 10000
    subprocess.run([str(ROOT / "scripts" / "regression-db")], check=True, cwd=ROOT)
    d = ROOT / "var" / "regression" / str(major)
    return d / "regression.dump", (d / "roles.sql").read_text()


@pytest.fixture
def regression_db(pg, regression_dump) -> str:
    dump, roles_sql = regression_dump
    name = f"regression_{secrets.token_hex(3)}"
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        names = [s.split()[2].strip('"') for s in database.split_statements(roles_sql) if s.startswith("CREATE ROLE")]
        database.create_missing_roles(c, database.role_statements(roles_sql, names))
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        for setting in REGRESS_SETTINGS:  # what pg_regress gave the original (see above)
            c.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(sql.Identifier(name)))
    subprocess.run([str(pg.bindir / "pg_restore"), "--exit-on-error", "-j", "2", "-h", str(pg.socket_dir),
                    "-p", str(pg.port), "-U", "postgres", "-d", name, str(dump)], check=True)
    try:
        yield name
    finally:
        with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
            for (db,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall():
                c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))


def test_the_regression_database_round_trips_exactly(pg, regression_db, repo, lock_dir, tmp_path):
    m = backup(source(pg, regression_db), repo, lock_dir=lock_dir)
    assert len(m["tables"]) > 500 and len(m["security"]["objects"]) > 1000
    assert m["security"]["policies"]  # its row-level security tests leave policies naming regress_rls_* roles
    assert any(r.startswith("regress_rls_") for r in m["roles"]["roles"])
    assert m["database_properties"]["settings"][0]["settings"][0] == "lc_messages=C"

    r = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    new = r["database"]
    check = compare_with_manifest(pg.url(new), m)
    assert check["ok"], check["problems"][:20]
    assert schema_dump(pg, new, owners=True) == schema_dump(pg, regression_db, owners=True)
    assert fingerprints(pg.url(new).reveal()) == fingerprints(pg.url(regression_db).reveal())

    # onto a scratch server that has none of its roles: they are created from the backup
    result = run_drill(env="staging", repo_config=repo, backup=m["id"], target=LocalTarget(),
                       report_base=tmp_path / "r", work_dir=tmp_path, record=False, rng=random.Random(1))
    assert result.outcome == "passed", (result.error, result.verification and
                                        [c.detail[:2000] for c in result.verification.failures()])
    assert any(n.startswith("regress_rls_") for n in result.restored["roles_created"])
