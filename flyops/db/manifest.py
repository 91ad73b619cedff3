"""What a backup records about the database, taken in the dump's own MVCC snapshot, and the
same facts read from a restored database for comparison."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from flyops.db.database import referenced_roles

#: manual and scheduled are what `db.backup --kind` takes; db.restore takes pre-restore itself
REQUESTED_KINDS = ("manual", "scheduled")
KINDS = (*REQUESTED_KINDS, "pre-restore")
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


#: Rails' versions are strings (`schema_migrations.version` is a varchar): `max(version)` says
#: '9' > '20260624101500'. Ordered as the numbers they are; a non-numeric version (never written
#: by Rails) sorts below every number, then by its text.
_MIGRATION_HEAD = """
SELECT version::text FROM public.schema_migrations
ORDER BY CASE WHEN version::text ~ '^[0-9]{1,100}$' THEN version::text::numeric END DESC NULLS LAST, version::text DESC
LIMIT 1
"""


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
        facts["schema_migrations_head"] = conn.execute(_MIGRATION_HEAD).fetchone()[0]
    facts["database_properties"] = database_properties(conn)
    facts["security"] = security_facts(conn)
    facts["referenced_roles"] = referenced_roles(conn)
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        counts[table_key(schema, table)] = conn.execute(q).fetchone()[0]
    facts["tables"] = counts
    return facts


#: The database's own row (to_jsonb: the columns differ between majors, e.g. daticulocale in
#: 15-16, datlocale from 17), its comment, and its settings (pg_db_role_setting: `ALTER DATABASE
#: ... SET` when setrole is 0, `ALTER ROLE ... IN DATABASE ... SET` otherwise). The ACL is the
#: effective one: NULL means acldefault('d', owner), which is what pg_dump compares with too.
_DATABASE = """
SELECT to_jsonb(d) - 'datacl' - 'oid' - 'datname' - 'datdba' - 'datfrozenxid' - 'datminmxid' - 'dattablespace'
         - 'datlastsysoid' - 'datcollversion' - 'datistemplate',
       pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
       ARRAY(SELECT a::text FROM unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a ORDER BY 1),
       shobj_description(d.oid, 'pg_database'),
       ARRAY(SELECT jsonb_build_object('role', r.rolname, 'settings', to_jsonb(s.setconfig))
             FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
             WHERE s.setdatabase = d.oid ORDER BY r.rolname NULLS FIRST)
FROM pg_database d WHERE d.datname = current_database()
"""


def database_properties(conn: psycopg.Connection) -> dict:
    """What pg_dump without --create does not keep (PostgreSQL 11+ dumps a database's ACL,
    comment and settings only with --create, and `CREATE DATABASE` itself sets encoding and
    locale): owner, encoding, locale, connection limit, ACL (CONNECT restrictions), comment,
    `ALTER DATABASE ... SET` and `ALTER ROLE ... IN DATABASE ... SET` settings."""
    row, owner, encoding, acl, comment, settings = conn.execute(_DATABASE).fetchone()
    return {
        "owner": owner, "encoding": encoding,
        "collate": row.get("datcollate"), "ctype": row.get("datctype"),
        "locale_provider": {"c": "libc", "i": "icu", "b": "builtin"}.get(row.get("datlocprovider") or "c", "libc"),
        "icu_locale": row.get("daticulocale") or row.get("datlocale"),
        "icu_rules": row.get("daticurules"),
        "connection_limit": row.get("datconnlimit", -1), "allow_connections": row.get("datallowconn", True),
        "acl": list(acl), "comment": comment,
        "settings": [{"role": s["role"], "settings": list(s["settings"] or [])} for s in settings],
    }


#: Owner and effective ACL (coalesce with acldefault: an explicit ACL equal to the default is
#: not dumped by pg_dump, dumputils.c buildACLCommands, and comes back as NULL) of every object
#: the application's schema consists of, named by pg_describe_object (the same text in any
#: database). Objects of extensions are left out: their extension's script creates them.
_OBJECTS = r"""
WITH ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e'),
sys AS (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema')
        OR nspname LIKE 'pg\_toast%' OR nspname LIKE 'pg\_temp\_%')
SELECT pg_describe_object('pg_class'::regclass, c.oid, 0), pg_get_userbyid(c.relowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                                                   c.relowner))) a ORDER BY 1), false
FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
  AND c.relnamespace NOT IN (SELECT oid FROM sys)
  AND (c.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_class'::regclass))
UNION ALL
SELECT pg_describe_object('pg_class'::regclass, a.attrelid, a.attnum), NULL,
       ARRAY(SELECT x::text FROM unnest(a.attacl) x ORDER BY 1), false
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attacl IS NOT NULL AND c.relnamespace NOT IN (SELECT oid FROM sys)
  AND c.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_class'::regclass)
UNION ALL
SELECT pg_describe_object('pg_namespace'::regclass, n.oid, 0), pg_get_userbyid(n.nspowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(n.nspacl, acldefault('n', n.nspowner))) a ORDER BY 1), false
FROM pg_namespace n WHERE n.oid NOT IN (SELECT oid FROM sys) AND n.nspname NOT LIKE 'pg\_%'
  AND n.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_namespace'::regclass)
UNION ALL
SELECT pg_describe_object('pg_proc'::regclass, p.oid, 0), pg_get_userbyid(p.proowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(p.proacl, acldefault('f', p.proowner))) a ORDER BY 1), p.prosecdef
FROM pg_proc p WHERE p.pronamespace NOT IN (SELECT oid FROM sys)
  AND p.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_proc'::regclass)
UNION ALL
SELECT pg_describe_object('pg_type'::regclass, t.oid, 0), pg_get_userbyid(t.typowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(t.typacl, acldefault('T', t.typowner))) a ORDER BY 1), false
FROM pg_type t WHERE t.typnamespace NOT IN (SELECT oid FROM sys) AND t.typtype IN ('b', 'd', 'e', 'r', 'm')
  AND t.typcategory <> 'A' AND t.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_type'::regclass)
UNION ALL
SELECT 'foreign-data wrapper ' || quote_ident(f.fdwname), pg_get_userbyid(f.fdwowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(f.fdwacl, acldefault('F', f.fdwowner))) a ORDER BY 1), false
FROM pg_foreign_data_wrapper f WHERE f.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_foreign_data_wrapper'::regclass)
UNION ALL
SELECT 'server ' || quote_ident(s.srvname), pg_get_userbyid(s.srvowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(s.srvacl, acldefault('S', s.srvowner))) a ORDER BY 1), false
FROM pg_foreign_server s WHERE s.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_foreign_server'::regclass)
UNION ALL
SELECT 'large object ' || l.oid, pg_get_userbyid(l.lomowner),
       ARRAY(SELECT a::text FROM unnest(coalesce(l.lomacl, acldefault('L', l.lomowner))) a ORDER BY 1), false
FROM pg_largeobject_metadata l
"""

_DEFAULT_ACLS = """
SELECT pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
       ARRAY(SELECT a::text FROM unnest(d.defaclacl) a ORDER BY 1)
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace ORDER BY 1, 2, 3
"""

_POLICIES = """
SELECT format('policy %I on %I.%I', p.polname, n.nspname, c.relname),
       ARRAY(SELECT CASE r WHEN 0 THEN 'public' ELSE pg_get_userbyid(r) END FROM unnest(p.polroles) r ORDER BY 1)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 1
"""


def security_facts(conn: psycopg.Connection) -> dict:
    """Who owns what and who may do what: owners and effective ACLs of every schema object
    (`objects`: name -> [owner, acl]), default privileges, SECURITY DEFINER functions (which
    run as their owner: a wrong owner or a PUBLIC EXECUTE is a privilege escalation), and the
    roles each row-level security policy applies to."""
    objects: dict[str, list] = {}
    definers: list[str] = []
    # pg_describe_object leaves out schemas on the search_path (which a database's own settings
    # may change): with only pg_catalog on it, every name is schema-qualified
    previous = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT set_config('search_path', 'pg_catalog', false)")
    try:
        for name, owner, acl, secdef in conn.execute(_OBJECTS).fetchall():
            objects[name] = [owner, list(acl)]
            if secdef:
                definers.append(name)
        default_acls = conn.execute(_DEFAULT_ACLS).fetchall()
        policies = conn.execute(_POLICIES).fetchall()
    finally:
        conn.execute("SELECT set_config('search_path', %s, false)", (previous,))
    return {
        "objects": dict(sorted(objects.items())),
        "default_acls": [{"role": r, "schema": n, "type": t, "acl": list(a)} for r, n, t, a in default_acls],
        "security_definer": sorted(definers),
        "policies": {name: list(roles) for name, roles in policies},
    }


def _compare_security(expected: dict, actual: dict) -> list[str]:
    problems: list[str] = []
    exp_o, act_o = expected.get("objects", {}), actual.get("objects", {})
    definers = set(expected.get("security_definer", []))
    for name in sorted(set(exp_o) | set(act_o)):
        what = f"SECURITY DEFINER {name}" if name in definers else name
        if name not in act_o:
            problems.append(f"{what} missing (its owner and grants with it)")
        elif name not in exp_o:
            problems.append(f"{what} not in the manifest")
        else:
            (e_owner, e_acl), (a_owner, a_acl) = exp_o[name], act_o[name]
            if e_owner != a_owner:
                problems.append(f"{what}: owner {a_owner}, manifest says {e_owner}")
            if sorted(e_acl) != sorted(a_acl):
                problems.append(f"{what}: grants {{{','.join(a_acl)}}}, manifest says {{{','.join(e_acl)}}}")
    if sorted(expected.get("security_definer", [])) != sorted(actual.get("security_definer", [])):
        problems.append(f"SECURITY DEFINER functions {actual.get('security_definer')}, "
                        f"manifest says {expected.get('security_definer')}")
    if expected.get("default_acls", []) != actual.get("default_acls", []):
        problems.append(f"default privileges {actual.get('default_acls')}, manifest says {expected.get('default_acls')}")
    if expected.get("policies", {}) != actual.get("policies", {}):
        problems.append(f"policy roles {actual.get('policies')}, manifest says {expected.get('policies')}")
    return problems


#: database properties a restore must bring back (the name is the restore's own)
DATABASE_KEYS = ("owner", "encoding", "collate", "ctype", "locale_provider", "icu_locale", "icu_rules",
                 "connection_limit", "acl", "comment", "settings")


def _compare_database(expected: dict, actual: dict, owner_of_new: str | None = None) -> list[str]:
    problems = []
    for key in DATABASE_KEYS:
        e, a = expected.get(key), actual.get(key)
        if key == "acl":
            e, a = sorted(e or []), sorted(a or [])
        if e != a:
            problems.append(f"database {key}: {a!r}, manifest says {e!r}")
    return problems


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
    if "database_properties" in expected:  # manifests from before they were recorded have none
        problems += _compare_database(expected["database_properties"], actual.get("database_properties", {}))
    if "security" in expected:
        problems += _compare_security(expected["security"], actual.get("security", {}))
    return problems
