"""Restores that give the application back: owners, grants, default privileges, SECURITY
DEFINER functions, roles, database settings and ACL, an old extension version, old-style
migrations, a 63-byte multibyte name; and never a database this run did not create.
Against the real PostgreSQL and restic of tests/services.py."""

from __future__ import annotations

import random
import secrets
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg import sql

from flyops.db import pgconn
from flyops.db.backup import backup
from flyops.db.database import role_statements, setting_sql, split_guc_list, split_statements
from flyops.db.drill import LocalTarget, run_drill
from flyops.db.restore import NAME_MAX_BYTES, missing_extensions, new_database_name, restore
from flyops.db.verify import compare_with_manifest
from flyops.errors import BadInput, PreconditionFailed
from flyops.secret import Secret
from tests.db.conftest import fingerprints, schema_dump, source

CJK_63 = "数据库恢复测试用的名字正好六十三字节长度"  # 20 characters: 60 bytes, +3 below
assert len(CJK_63.encode()) == 60
CJK_63 += "名"
assert len(CJK_63.encode()) == NAME_MAX_BYTES


def app_schema(tok: str, db: str) -> str:
    """Roles with grants and default privileges, a SECURITY DEFINER function with restricted
    EXECUTE, database settings and a CONNECT restriction, hstore at an older version (1.4:
    /usr/share/postgresql/<major>/extension/hstore--1.4.sql ships with every supported major),
    old-style migrations and a policy naming a role."""
    o, ro, login = f"app_owner_{tok}", f"app_ro_{tok}", f"app_login_{tok}"
    d = sql.Identifier(db).as_string(None)
    return f"""
CREATE ROLE {o} NOLOGIN;
CREATE ROLE {ro} NOLOGIN;
CREATE ROLE {login} LOGIN PASSWORD 'login-secret-{tok}' IN ROLE {ro};
COMMENT ON ROLE {ro} IS 'read-only group';
ALTER DATABASE {d} OWNER TO {o};
REVOKE CONNECT, TEMPORARY ON DATABASE {d} FROM PUBLIC;
GRANT CONNECT ON DATABASE {d} TO {ro};
ALTER DATABASE {d} SET search_path = app, "$user", public;
ALTER DATABASE {d} SET statement_timeout = '5s';
ALTER ROLE {ro} IN DATABASE {d} SET default_transaction_read_only = on;
COMMENT ON DATABASE {d} IS 'the application''s database';
CREATE EXTENSION hstore WITH SCHEMA public VERSION '1.4';
CREATE SCHEMA app AUTHORIZATION {o};
GRANT USAGE ON SCHEMA app TO {ro};
ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA app GRANT SELECT ON TABLES TO {ro};
SET ROLE {o};
CREATE TABLE app.accounts (id int PRIMARY KEY, owner_name text, balance numeric, attrs public.hstore);
INSERT INTO app.accounts SELECT g, 'user' || g, g * 10, 'a=>1' FROM generate_series(1, 200) g;
CREATE TABLE app.audit (id int);
CREATE FUNCTION app.reset_balance(acct int) RETURNS void LANGUAGE sql SECURITY DEFINER
  SET search_path = app, pg_temp AS $$ UPDATE app.accounts SET balance = 0 WHERE id = acct $$;
REVOKE EXECUTE ON FUNCTION app.reset_balance(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.reset_balance(int) TO {login};
ALTER TABLE app.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON app.accounts FOR SELECT TO {ro} USING (owner_name = current_user);
RESET ROLE;
CREATE TABLE public.schema_migrations (version varchar PRIMARY KEY);
INSERT INTO public.schema_migrations VALUES ('9'), ('20260624101500'), ('20191231000000');
"""


@pytest.fixture
def app_db(pg):
    """A database named with 63 bytes of CJK, holding `app_schema`. Yields (name, token)."""
    tok = secrets.token_hex(3)
    name = CJK_63
    admin = psycopg.connect(pg.url().reveal(), autocommit=True)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    with psycopg.connect(pg.url(name).reveal(), autocommit=True) as c:
        c.execute(app_schema(tok, name))
    try:
        yield name, tok
    finally:
        base = name.encode()[:30].decode("utf-8", "ignore")
        for (db,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s OR datname = %s",
                                   (base + "%", name)).fetchall():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in (f"app_login_{tok}", f"app_ro_{tok}", f"app_owner_{tok}"):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


def database_row(pg, name: str) -> tuple:
    """What must never change on a database a restore did not create."""
    with psycopg.connect(pg.url().reveal()) as c:
        return c.execute(
            "SELECT d.oid, d.datname, pg_get_userbyid(d.datdba), d.datacl::text, d.datconnlimit, "
            "ARRAY(SELECT s.setconfig::text FROM pg_db_role_setting s WHERE s.setdatabase = d.oid ORDER BY 1), "
            "shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE datname = %s", (name,)).fetchone()


def test_a_backup_records_roles_settings_acl_versions_and_security(pg, app_db, repo, lock_dir):
    name, tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    assert m["schema_migrations_head"] == "20260624101500"  # not '9', which max(varchar) gives
    assert {e["name"]: e["version"] for e in m["extensions"]} == {"hstore": "1.4"}
    roles = m["roles"]
    assert {f"app_owner_{tok}", f"app_ro_{tok}", f"app_login_{tok}"} <= set(roles["roles"])
    assert not any(r.startswith("app_") and not r.endswith(tok) for r in roles["roles"])  # only roles it uses
    assert roles["passwords"] == {} and not roles["with_passwords"]
    assert "login-secret" not in str(m) and "SCRAM-SHA-256" not in str(m)  # no password, not even hashed
    assert {"role": f"app_ro_{tok}", "member": f"app_login_{tok}",
            "sql": f"GRANT app_ro_{tok} TO app_login_{tok}"} in roles["memberships"]
    props = m["database_properties"]
    assert props["owner"] == f"app_owner_{tok}" and props["encoding"] == "UTF8"
    assert not any(a.startswith("=") for a in props["acl"])  # PUBLIC has no CONNECT
    assert f"app_ro_{tok}=c/app_owner_{tok}" in props["acl"]
    assert props["comment"] == "the application's database"
    assert {"role": None, "settings": ['search_path=app, "$user", public', "statement_timeout=5s"]} in props["settings"]
    assert {"role": f"app_ro_{tok}", "settings": ["default_transaction_read_only=on"]} in props["settings"]
    sec = m["security"]
    assert sec["security_definer"] == ["function app.reset_balance(integer)"]
    owner, acl = sec["objects"]["function app.reset_balance(integer)"]
    assert owner == f"app_owner_{tok}" and not any(a.startswith("=") for a in acl)
    assert sec["default_acls"][0]["role"] == f"app_owner_{tok}"
    assert sec["policies"] == {"policy own_rows on app.accounts": [f"app_ro_{tok}"]}


def test_role_passwords_are_recorded_only_when_asked(pg, app_db, repo, lock_dir):
    name, tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir, role_passwords=True)
    assert m["roles"]["passwords"][f"app_login_{tok}"].startswith("SCRAM-SHA-256$")
    assert all("PASSWORD" not in s for stmts in m["roles"]["roles"].values() for s in stmts)


def test_a_restore_on_the_same_cluster_is_identical_and_leaves_the_source_alone(pg, app_db, repo, lock_dir):
    name, tok = app_db
    before = database_row(pg, name)
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    new = r["database"]
    assert new != name and len(new.encode()) <= NAME_MAX_BYTES and "_restore_" in new
    assert r["roles_created"] == [] and r["owners_kept"] and r["grants_kept"]  # the roles exist here
    assert database_row(pg, name) == before
    assert compare_with_manifest(pg.url(new), m)["ok"], compare_with_manifest(pg.url(new), m)["problems"]
    assert schema_dump(pg, new, owners=True) == schema_dump(pg, name, owners=True)
    assert fingerprints(pg.url(new).reveal()) == fingerprints(pg.url(name).reveal())
    src_row, new_row = database_row(pg, name), database_row(pg, new)
    assert (new_row[2], new_row[4], new_row[6]) == (src_row[2], src_row[4], src_row[6])  # owner, limit, comment
    assert sorted(new_row[3].strip("{}").split(",")) == sorted(src_row[3].strip("{}").split(","))  # ACL
    assert new_row[5] == src_row[5]  # ALTER DATABASE / ALTER ROLE IN DATABASE settings
    with psycopg.connect(pg.url(new).reveal()) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'hstore'").fetchone()[0] == "1.4"
        assert c.execute("SELECT has_function_privilege(%s, 'app.reset_balance(int)', 'EXECUTE')",
                         (f"app_ro_{tok}",)).fetchone()[0] is False
        assert c.execute("SELECT has_database_privilege('public', current_database(), 'CONNECT')").fetchone()[0] is False


def test_two_restores_at_once_succeed_side_by_side(pg, app_db, repo, lock_dir):
    name, _tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    before = database_row(pg, name)

    def one(_):
        return restore(m["id"], env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(one, range(2))
    assert a["database"] != b["database"]
    for r in (a, b):
        assert compare_with_manifest(pg.url(r["database"]), m)["ok"]
    assert database_row(pg, name) == before


def test_a_role_without_createdb_gets_one_message_and_nothing_is_dropped(pg, app_db, repo, lock_dir):
    name, tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    before = database_row(pg, name)
    pw = secrets.token_urlsafe(12)
    role = f"app_nocreatedb_{tok}"
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(pw)))
    try:
        url = Secret(pgconn.with_dbname(pg.url(), "postgres").reveal())
        params = {**psycopg.conninfo.conninfo_to_dict(url.reveal()), "user": role, "password": pw}
        url = Secret(psycopg.conninfo.make_conninfo(**params))
        with pytest.raises(PreconditionFailed) as e:
            restore(m["id"], env="staging", repos={"staging": repo}, server_url=url)
        assert "CREATEDB" in e.value.fix and "permission denied" in e.value.message
        assert pw not in str(e.value)
        assert database_row(pg, name) == before
    finally:
        with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_drill_on_a_scratch_server_creates_the_roles_and_verifies_everything(pg, app_db, repo, lock_dir, tmp_path):
    name, tok = app_db
    backup(source(pg, name), repo, lock_dir=lock_dir)
    result = run_drill(env="staging", repo_config=repo, target=LocalTarget(), report_base=tmp_path / "r",
                       work_dir=tmp_path, record=False, rng=random.Random(1))
    assert result.outcome == "passed", (result.error, result.verification and result.verification.failures())
    assert {f"app_owner_{tok}", f"app_ro_{tok}", f"app_login_{tok}"} <= set(result.restored["roles_created"])
    checks = {c.name: c.detail for c in result.verification.checks}
    assert "matches manifest" in checks


def test_verification_fails_on_a_changed_grant_owner_or_setting(pg, app_db, repo, lock_dir):
    name, tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"))
    new = r["database"]
    with psycopg.connect(pg.url(new).reveal(), autocommit=True) as c:
        c.execute("GRANT EXECUTE ON FUNCTION app.reset_balance(int) TO PUBLIC")
        c.execute("ALTER TABLE app.audit OWNER TO postgres")
        c.execute(sql.SQL("ALTER DATABASE {} RESET statement_timeout").format(sql.Identifier(new)))
        c.execute("ALTER EXTENSION hstore UPDATE TO '1.5'")
    problems = compare_with_manifest(pg.url(new), m)["problems"]
    text = "\n".join(problems)
    assert "SECURITY DEFINER function app.reset_balance(integer): grants" in text
    assert f"table app.audit: owner postgres, manifest says app_owner_{tok}" in text
    assert "database settings" in text
    assert "extension hstore: 1.5, manifest says 1.4" in text


def test_no_owner_and_no_acl_are_explicit_and_verification_shows_their_cost(pg, app_db, repo, lock_dir):
    name, _tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    r = restore("latest", env="staging", repos={"staging": repo}, server_url=pg.url("postgres"),
                no_owner=True, no_acl=True)
    assert not r["owners_kept"] and not r["grants_kept"]
    text = "\n".join(compare_with_manifest(pg.url(r["database"]), m)["problems"])
    assert "SECURITY DEFINER function app.reset_balance(integer): owner postgres" in text


def test_an_extension_version_the_target_lacks_is_refused_before_anything_changes(pg):
    with psycopg.connect(pg.url().reveal()) as c:
        problems = missing_extensions(c, {"extensions": [{"name": "hstore", "version": "0.9", "schema": "public"},
                                                         {"name": "no_such_ext", "version": "1", "schema": "public"},
                                                         {"name": "citext", "version": "1.4", "schema": "ext"}]})
    assert problems[0].startswith("hstore 0.9: the target has only 1.4, 1.5, ") and "no hstore--0.9.sql" in problems[0]
    assert problems[1] == "no_such_ext: not installed on the target server"
    assert "citext 1.4 in schema ext: pg_restore creates it at the target's default" in problems[2]


# -- names, URLs, statements (pure, and against the server where libpq decides) ---------------


def test_new_names_fit_63_bytes_never_equal_the_source_and_differ_per_run():
    a, b = new_database_name(CJK_63, "restore"), new_database_name(CJK_63, "restore")
    assert a != b and a != CJK_63 and len(a.encode()) <= 63 and len(b.encode()) <= 63
    assert a.encode().decode() == a  # cut at a character boundary
    assert new_database_name("my_app", "pre").startswith("my_app_pre_")


@pytest.mark.parametrize(("url", "expect"), [
    ("postgresql:///db?host=/var/run/postgresql", {"dbname": "db", "host": "/var/run/postgresql"}),
    ("postgres://u%40x:p%2Fw@[::1]:5433/d%C3%A9b", {"user": "u@x", "password": "p/w", "host": "::1", "port": "5433",
                                                    "dbname": "déb"}),
    ("postgresql://h/db?host=other&port=6000", {"dbname": "db", "host": "other", "port": "6000"}),
    ("host=/tmp dbname=x user=me", {"dbname": "x", "host": "/tmp", "user": "me"}),
])
def test_urls_are_read_as_libpq_reads_them(url, expect):
    assert pgconn.parse_url(Secret(url)) == expect
    other = pgconn.with_dbname(Secret(url), "其他 db")
    assert pgconn.parse_url(other) == {**expect, "dbname": "其他 db"}
    moved = pgconn.with_address(Secret(url), "127.0.0.1", 7000)
    assert pgconn.parse_url(moved) == {**expect, "host": "127.0.0.1", "port": "7000"}
    assert "p/w" not in pgconn.display(Secret(url)) and "p%2Fw" not in pgconn.display(Secret(url))


def test_bad_urls_are_bad_input_without_the_password():
    with pytest.raises(BadInput) as e:
        pgconn.parse_url(Secret("postgres://u:hunter2@[::1/db"))
    assert "hunter2" not in str(e.value) and "IPv6" in str(e.value)
    with pytest.raises(BadInput) as e:
        pgconn.parse_url(Secret("postgres://u:hunter2@h/db?nosuch=1"))
    assert "hunter2" not in str(e.value) and "nosuch" in str(e.value)
    with pytest.raises(BadInput, match="names no database"):
        pgconn.parse_url(Secret("postgresql://u@h"))
    with pytest.raises(BadInput, match="must be a postgres://"):
        pgconn.parse_url(Secret("mysql://h/db"))


def test_a_socket_url_reaches_the_server_and_restores(pg, small_db, repo, lock_dir):
    url = Secret(f"postgresql:///{small_db}?host={pg.socket_dir}&port={pg.port}&user=postgres")
    m = backup(source(pg, small_db), repo, lock_dir=lock_dir)
    r = restore(m["id"], env="staging", repos={"staging": repo}, server_url=pgconn.with_dbname(url, "postgres"))
    assert compare_with_manifest(pgconn.with_dbname(url, r["database"]), m)["ok"]


def test_role_statements_keep_only_the_named_roles_and_take_passwords_out():
    script = """--
\\restrict abc
SET default_transaction_read_only = off;
CREATE ROLE "Odd;Name";
ALTER ROLE "Odd;Name" WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$4096:x''y';
COMMENT ON ROLE "Odd;Name" IS 'multi
line; comment';
CREATE ROLE other;
GRANT other TO "Odd;Name" GRANTED BY postgres;
GRANT pg_read_all_data TO "Odd;Name" WITH INHERIT TRUE GRANTED BY postgres;
"""
    assert len(split_statements(script)) == 7
    out = role_statements(script, ["Odd;Name"])
    assert out["roles"] == {"Odd;Name": ['CREATE ROLE "Odd;Name"', 'ALTER ROLE "Odd;Name" WITH NOSUPERUSER LOGIN',
                                         "COMMENT ON ROLE \"Odd;Name\" IS 'multi\nline; comment'"]}
    assert out["passwords"] == {"Odd;Name": "SCRAM-SHA-256$4096:x'y"}
    assert [g["sql"] for g in out["memberships"]] == ['GRANT pg_read_all_data TO "Odd;Name" WITH INHERIT TRUE']


def test_list_settings_are_quoted_element_by_element_as_pg_dump_does(pg, make_db):
    assert split_guc_list('app, "$user", "a,b" ,public') == ["app", "$user", "a,b", "public"]
    db = make_db("guc")
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        for entry in ['search_path=app, "$user", "we""ird"', "statement_timeout=5s", "myapp.tenant=a b"]:
            c.execute(setting_sql(sql.SQL("ALTER DATABASE {}").format(sql.Identifier(db)), entry))
        got = c.execute("SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = "
                        "(SELECT oid FROM pg_database WHERE datname = %s)", (db,)).fetchone()[0]
    assert got == ['search_path=app, "$user", "we""ird"', "statement_timeout=5s", "myapp.tenant=a b"]


def test_db_verify_at_restore_level_checks_the_application_state_on_a_scratch_server(pg, app_db, repo, lock_dir):
    from flyops.db.verify import verify

    name, _tok = app_db
    m = backup(source(pg, name), repo, lock_dir=lock_dir)
    result = verify("restore", env="staging", repo_config=repo, backup=m, record=False)
    assert result.ok, [c.to_dict() for c in result.failures()]
    detail = {c.name: c.detail for c in result.checks}["matches manifest"]
    assert "1 SECURITY DEFINER functions" in detail and "database settings and ACL" in detail
