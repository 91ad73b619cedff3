"""A database as the application sees it, beyond what its dump holds: the roles it uses, its
own properties (owner, encoding, locale, ACL, comment, settings) and its extensions' versions.
Recorded with each backup, applied by every restore (`db.restore`, `dr.drill`, `db.verify
--level restore`).

Why a dump is not enough (pg_dump's documentation, "Notes", and pg_dump.c):
- roles are cluster-wide: pg_dump refers to them (owners, GRANTs, policies) but never creates
  them; `pg_dumpall --roles-only` does;
- since PostgreSQL 11 a database's ACL, comment and `ALTER DATABASE ... SET` /
  `ALTER ROLE ... IN DATABASE ... SET` settings are dumped only with `--create`
  (pg_dump.c dumpDatabase), and encoding and locale are properties of `CREATE DATABASE`;
- `CREATE EXTENSION` is dumped without `VERSION` (pg_dump.c dumpExtension), so a restore gets
  the target's default version.

Nothing here alters a role or database this run did not create: roles that exist on the target
are used as they are; settings, ACL and comment go only onto the new database.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import sql

from flyops.db import pgconn
from flyops.db.config import Tools
from flyops.db.hosts import Host
from flyops.errors import OpsError, PreconditionFailed
from flyops.secret import Secret

# -- which roles a database uses --------------------------------------------------------------

#: Roles this database references: every shared dependency recorded for it (owners, ACL
#: grantees, policy roles, default privileges: pg_shdepend, which skips pinned roles such as the
#: bootstrap superuser, so objects' owners are added too), its owner, its ACL's grantees, its
#: per-role settings; then everything connected to those by membership, both ways (a login role
#: that is a member of a group holding the grants is how the application connects). Built-in
#: pg_* roles are kept but not walked through (every monitoring role is a member of pg_monitor).
_REFERENCED_ROLES = """
WITH RECURSIVE db AS (SELECT oid, datdba, datacl FROM pg_database WHERE datname = current_database()),
direct(oid) AS (
  SELECT refobjid FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND dbid = (SELECT oid FROM db)
  UNION SELECT datdba FROM db
  UNION SELECT (aclexplode(datacl)).grantee FROM db WHERE datacl IS NOT NULL
  UNION SELECT setrole FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM db) AND setrole <> 0
  UNION SELECT relowner FROM pg_class UNION SELECT nspowner FROM pg_namespace
  UNION SELECT proowner FROM pg_proc UNION SELECT typowner FROM pg_type
),
closure(oid) AS (
  SELECT oid FROM direct
  UNION
  SELECT CASE WHEN m.member = c.oid THEN m.roleid ELSE m.member END
  FROM pg_auth_members m JOIN closure c ON c.oid IN (m.member, m.roleid)
  WHERE (SELECT rolname FROM pg_roles WHERE oid = c.oid) NOT LIKE 'pg\\_%'
)
SELECT rolname FROM pg_roles WHERE oid IN (SELECT oid FROM closure) ORDER BY 1
"""


def referenced_roles(conn: psycopg.Connection) -> list[str]:
    # the recursive CTE's row estimate is far off, and JIT then compiles it: 0.72 s of 0.79 s
    # on the regression database (EXPLAIN ANALYZE); without JIT it takes 20 ms
    previous = conn.execute("SELECT current_setting('jit')").fetchone()[0]
    conn.execute("SELECT set_config('jit', 'off', false)")
    try:
        return [r[0] for r in conn.execute(_REFERENCED_ROLES).fetchall()]
    finally:
        conn.execute("SELECT set_config('jit', %s, false)", (previous,))


# -- pg_dumpall --roles-only, filtered ----------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")*"|[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)'
_ROLE_STMT = re.compile(rf'^(?:CREATE|ALTER|COMMENT ON) ROLE ({_IDENT})', re.S)
_GRANT_STMT = re.compile(rf'^GRANT ({_IDENT}) TO ({_IDENT})', re.S)
_GRANTED_BY = re.compile(rf'\s+GRANTED BY {_IDENT}\s*$', re.S)
#: `ALTER ROLE r IN DATABASE d SET` names another database (this one's are in the properties)
_IN_DATABASE = re.compile(rf'^ALTER ROLE {_IDENT} IN DATABASE ', re.S)
_PASSWORD = re.compile(r"\s+PASSWORD '((?:[^']|'')*)'", re.S)


def unquote_ident(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def split_statements(script: str) -> list[str]:
    """The SQL statements of a pg_dumpall script, without comments and psql meta-commands
    (`\\connect`, `\\restrict`): split at `;` outside quotes ('...' strings as pg_dump writes
    them with standard_conforming_strings, "..." identifiers)."""
    out: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    for line in script.splitlines(keepends=True):
        if quote is None and not "".join(buf).strip() and (line.startswith(("--", "\\")) or not line.strip()):
            continue
        for ch in line:
            buf.append(ch)
            if quote:
                if ch == quote:
                    quote = None  # a doubled quote closes and reopens: same result
            elif ch in "'\"":
                quote = ch
            elif ch == ";":
                out.append("".join(buf).strip()[:-1].strip())
                buf = []
    return [s for s in out if s]


def role_statements(script: str, roles: Sequence[str]) -> dict:
    """From `pg_dumpall --roles-only` output: per role of `roles`, the statements that create
    it (CREATE ROLE, ALTER ROLE ... WITH, COMMENT ON ROLE, ALTER ROLE ... SET), and the
    memberships among them. Passwords are taken out of the statements into `passwords`
    (present only when the dump had them: they are secrets even hashed). `GRANTED BY` is left
    out: the grantor may not exist on the target; the restoring role becomes it."""
    wanted = set(roles)
    per_role: dict[str, list[str]] = {}
    grants: list[dict] = []
    passwords: dict[str, str] = {}
    for stmt in split_statements(script):
        if m := _GRANT_STMT.match(stmt):
            role, member = unquote_ident(m.group(1)), unquote_ident(m.group(2))
            if member in wanted and (role in wanted or role.startswith("pg_")):
                grants.append({"role": role, "member": member, "sql": _GRANTED_BY.sub("", stmt)})
        elif m := _ROLE_STMT.match(stmt):
            name = unquote_ident(m.group(1))
            if name in wanted and not name.startswith("pg_") and not _IN_DATABASE.match(stmt):
                if pw := _PASSWORD.search(stmt):
                    passwords[name] = pw.group(1).replace("''", "'")
                    stmt = _PASSWORD.sub("", stmt)
                per_role.setdefault(name, []).append(stmt)
    return {"roles": {n: per_role[n] for n in sorted(per_role)}, "memberships": grants, "passwords": passwords}


def dumpall_roles_script(tools: Tools, conninfo: str, *, passwords: bool) -> str:
    argv = [tools.pg_dumpall, "--roles-only", "--dbname", conninfo]
    if not passwords:
        argv.insert(2, "--no-role-passwords")  # reads pg_roles, not pg_authid: no superuser needed
    return shlex.join(argv) + "\n"


def record_roles(host: Host, tools: Tools, url: Secret, roles: Sequence[str], *, passwords: bool = False) -> dict:
    """The manifest's `roles`: `pg_dumpall --roles-only` on the host, filtered to `roles`."""
    r = host.run_script(dumpall_roles_script(tools, pgconn.conninfo_without_password(url), passwords=passwords),
                        pgconn.libpq_secrets(url))
    if not r.ok:
        raise OpsError(f"pg_dumpall --roles-only failed on {host.name} (exit {r.rc}); no backup was recorded:\n"
                       + "\n".join(r.stderr.strip().splitlines()[-5:]),
                       fix="run the backup as a role that can read pg_roles (any role can), with pg_dumpall "
                           "installed on that host (postgresql-client)")
    out = role_statements(r.stdout, roles)
    out["with_passwords"] = passwords
    return out


# -- restore side ---------------------------------------------------------------------------------


def create_missing_roles(conn: psycopg.Connection, recorded: Mapping | None) -> list[str]:
    """Create, from the manifest, the roles the target server does not have; returns those this
    run created. Existing roles are left exactly as they are (never altered); memberships are
    granted only to roles created here. A role created meanwhile by a concurrent restore
    counts as existing."""
    if not recorded:
        return []
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    created: list[str] = []
    for name, statements in recorded.get("roles", {}).items():
        if name in existing:
            continue
        try:
            with conn.transaction():
                for stmt in statements:
                    conn.execute(stmt)  # pg_dumpall's own text: identifiers and literals quoted by it
                pw = (recorded.get("passwords") or {}).get(name)
                if pw:
                    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(pw)))
        except psycopg.errors.DuplicateObject:
            continue  # created by someone else since we looked: not ours
        except psycopg.errors.InsufficientPrivilege:
            me = conn.execute("SELECT current_user").fetchone()[0]
            raise PreconditionFailed(
                f"the target server lacks role {name!r}, which the backup's objects use, and {me!r} may not "
                f"create roles", fix="restore as a role with CREATEROLE (e.g. the postgres superuser), create "
                                     "the roles first, or pass --no-owner --no-acl (see its help)") from None
        created.append(name)
    for grant in recorded.get("memberships", []):
        if grant["member"] in created:
            conn.execute(grant["sql"])
    return created


#: GUCs whose value is a list and whose elements pg_dump quotes one by one
#: (dumputils.c variable_is_guc_list_quote, used by makeAlterConfigCommand)
_LIST_GUCS = {"local_preload_libraries", "search_path", "session_preload_libraries",
              "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"}


def split_guc_list(value: str) -> list[str]:
    """SplitGUCList (varlena.c): comma-separated, "double-quoted" elements unquoted."""
    items, cur, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == '"' and value[i + 1:i + 2] == '"':
                cur += '"'
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur += ch
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    items.append(cur.strip())
    return [x for x in items if x != ""]


def setting_sql(target: sql.Composable, entry: str) -> sql.Composed:
    """`<target> SET name TO value` for one pg_db_role_setting entry 'name=value', quoted the
    way pg_dump's makeAlterConfigCommand quotes it."""
    name, _, value = entry.partition("=")
    if name.lower() in _LIST_GUCS:
        values = sql.SQL(", ").join(sql.Literal(v) for v in split_guc_list(value)) if value else sql.Literal("")
    else:
        values = sql.Literal(value)
    return sql.SQL("{} SET {} TO {}").format(target, sql.Identifier(*name.split(".")) if "." in name
                                              else sql.Identifier(name), values)


def create_database_sql(name: str, props: Mapping | None, *, owner: bool, server_num: int) -> sql.Composed:
    """CREATE DATABASE with the recorded encoding, locale and (unless `owner` is False) owner."""
    parts = [sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))]
    p = props or {}
    if p.get("encoding"):
        parts.append(sql.SQL("ENCODING {}").format(sql.Literal(p["encoding"])))
    if p.get("collate"):
        parts.append(sql.SQL("LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(p["collate"]), sql.Literal(p["ctype"])))
    provider = p.get("locale_provider") or "libc"
    if provider != "libc" and server_num >= 150000:
        parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
        if p.get("icu_locale"):
            key = "ICU_LOCALE" if provider == "icu" else "BUILTIN_LOCALE"
            parts.append(sql.SQL(key + " {}").format(sql.Literal(p["icu_locale"])))
        if p.get("icu_rules"):
            parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(p["icu_rules"])))
    if owner and p.get("owner"):
        parts.append(sql.SQL("OWNER {}").format(sql.Identifier(p["owner"])))
    return sql.SQL(" ").join(parts)


_ACLITEM = re.compile(r'^((?:"(?:[^"]|"")*"|[^=]*))=([A-Za-z*]*)/((?:"(?:[^"]|"")*"|.*))$')
_DB_PRIVS = {"C": "CREATE", "T": "TEMPORARY", "c": "CONNECT"}


def database_acl_sql(name: str, acl: Sequence[str], owner: str) -> list[sql.Composed]:
    """Statements that give database `name` exactly the ACL `acl` (aclitem texts): REVOKE ALL
    from PUBLIC and the owner, then each grant (with its grant option)."""
    ident = sql.Identifier(name)
    out = [sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident),
           sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(ident, sql.Identifier(owner))]
    for item in acl:
        m = _ACLITEM.match(item)
        if not m:
            raise OpsError(f"cannot read the database ACL entry {item!r} in the manifest")
        grantee = unquote_ident(m.group(1))
        to = sql.SQL("PUBLIC") if grantee == "" else sql.Identifier(grantee)
        privs, i = m.group(2), 0
        plain, with_option = [], []
        while i < len(privs):
            word = _DB_PRIVS.get(privs[i])
            if word:
                (with_option if privs[i + 1:i + 2] == "*" else plain).append(word)
            i += 1
        for words, suffix in ((plain, ""), (with_option, " WITH GRANT OPTION")):
            if words:
                out.append(sql.SQL("GRANT " + ", ".join(words) + " ON DATABASE {} TO {}" + suffix).format(ident, to))
    return out


def finish_database(conn: psycopg.Connection, name: str, props: Mapping | None, *, acl: bool = True) -> list[str]:
    """After the data is in: the recorded comment, settings, ACL and connection limit onto the
    NEW database `name` (never onto another). Applied last so that a recorded
    `default_transaction_read_only`, `statement_timeout`, CONNECT restriction or connection
    limit cannot get in pg_restore's way. Returns what could not be applied: settings of roles
    the target lacks (only when roles were not created: --no-owner --no-acl)."""
    skipped: list[str] = []
    if not props:
        return skipped
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    ident = sql.Identifier(name)
    if props.get("comment") is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(props["comment"])))
    for entry in props.get("settings", []):
        if entry.get("role") is not None and entry["role"] not in existing:
            skipped.append(f"settings of role {entry['role']} (no such role here): {', '.join(entry['settings'])}")
            continue
        target = (sql.SQL("ALTER DATABASE {}").format(ident) if entry.get("role") is None else
                  sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(entry["role"]), ident))
        for setting in entry.get("settings", []):
            conn.execute(setting_sql(target, setting))
    if acl and props.get("acl") is not None:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                             (name,)).fetchone()[0]
        for stmt in database_acl_sql(name, props["acl"], owner):
            conn.execute(stmt)
    if int(props.get("connection_limit", -1)) != -1:
        conn.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident, int(props["connection_limit"])))
    return skipped


# -- extensions at their recorded versions ----------------------------------------------------------


def extension_problems(conn: psycopg.Connection, manifest: Mapping) -> list[str]:
    """Why the target cannot have the backup's extensions at their recorded versions (empty: it
    can). An extension in `public` is created before pg_restore at its version (`CREATE
    EXTENSION ... VERSION`), which needs that version's script on the target; one in another
    schema is created by pg_restore itself inside the dump's schema (no VERSION: pg_dump
    writes none), so the target's default version must be the recorded one."""
    rows = conn.execute("SELECT e.name, e.version, a.default_version FROM pg_available_extension_versions e "
                        "JOIN pg_available_extensions a ON a.name = e.name").fetchall()
    versions: dict[str, set[str]] = {}
    default: dict[str, str] = {}
    for name, version, dflt in rows:
        versions.setdefault(name, set()).add(version)
        default[name] = dflt
    problems = []
    for ext in manifest.get("extensions", []):
        name, version = ext["name"], ext.get("version")
        if name not in versions:
            problems.append(f"{name}: not installed on the target server")
        elif version and version not in versions[name]:
            problems.append(f"{name} {version}: the target has only {', '.join(sorted(versions[name]))} "
                            f"(no {name}--{version}.sql script or update path to it)")
        elif version and ext.get("schema") != "public" and default[name] != version:
            problems.append(f"{name} {version} in schema {ext.get('schema')}: pg_restore creates it at the target's "
                            f"default {default[name]}; only extensions in public are created at their version")
    return problems


def create_extensions(conn: psycopg.Connection, manifest: Mapping) -> None:
    """The manifest's public-schema extensions at their recorded versions (other schemas do not
    exist yet; pg_restore creates those and their extensions)."""
    for ext in manifest.get("extensions", []):
        if ext.get("schema") == "public":
            stmt = sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA public").format(sql.Identifier(ext["name"]))
            if ext.get("version"):
                stmt = sql.SQL("{} VERSION {}").format(stmt, sql.Literal(ext["version"]))
            conn.execute(stmt)
