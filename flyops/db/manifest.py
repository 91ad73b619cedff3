"""What a backup records about the database, taken in the dump's own MVCC snapshot, and the
same facts read from a restored database for comparison."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import psycopg
from psycopg import sql

KINDS = ("manual", "scheduled", "pre-restore")
_SHORT_KIND = {"manual": "manual", "scheduled": "sched", "pre-restore": "prerestore"}

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def new_backup_id(kind: str, now: datetime | None = None) -> str:
    """Sortable and readable: 20261126T120005Z-manual-3f9c."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{_SHORT_KIND.get(kind, kind)}-{secrets.token_hex(2)}"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table_key(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'  # readable and unambiguous for ordinary names


def database_facts(conn: psycopg.Connection) -> dict:
    """Server version, extensions, large objects, Rails migration head and exact row counts.

    Call inside the transaction whose snapshot the dump uses, so counts match the dump.
    """
    facts: dict = {}
    facts["server_version_num"] = int(conn.execute("SHOW server_version_num").fetchone()[0])
    facts["server_version"] = conn.execute("SHOW server_version").fetchone()[0]
    facts["extensions"] = [
        {"name": n, "version": v, "schema": s}
        for n, v, s in conn.execute(
            "SELECT e.extname, e.extversion, n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY 1"
        ).fetchall()
    ]
    facts["large_objects"] = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
    facts["schema_migrations_head"] = None
    if conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0]:
        facts["schema_migrations_head"] = conn.execute("SELECT max(version)::text FROM public.schema_migrations").fetchone()[0]
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[table_key(schema, table)] = conn.execute(q).fetchone()[0]
    facts["tables"] = counts
    return facts


def compare_facts(expected: dict, actual: dict) -> list[str]:
    """Differences a restore must not have, as readable lines (empty = match)."""
    problems: list[str] = []
    exp_t, act_t = expected.get("tables", {}), actual.get("tables", {})
    for t in sorted(set(exp_t) | set(act_t)):
        if t not in act_t:
            problems.append(f"table {t} missing (expected {exp_t[t]} rows)")
        elif t not in exp_t:
            problems.append(f"table {t} not in the manifest ({act_t[t]} rows)")
        elif exp_t[t] != act_t[t]:
            problems.append(f"table {t}: {act_t[t]} rows, manifest says {exp_t[t]}")
    if expected.get("schema_migrations_head") != actual.get("schema_migrations_head"):
        problems.append(f"schema_migrations head {actual.get('schema_migrations_head')!r}, "
                        f"manifest says {expected.get('schema_migrations_head')!r}")
    exp_e = {e["name"]: e["version"] for e in expected.get("extensions", [])}
    act_e = {e["name"]: e["version"] for e in actual.get("extensions", [])}
    for name in sorted(set(exp_e) | set(act_e)):
        if exp_e.get(name) != act_e.get(name):
            problems.append(f"extension {name}: {act_e.get(name) or 'absent'}, manifest says {exp_e.get(name) or 'absent'}")
    if expected.get("large_objects") != actual.get("large_objects"):
        problems.append(f"large objects: {actual.get('large_objects')}, manifest says {expected.get('large_objects')}")
    return problems
