"""Database URLs as Secrets: parse, show without the password, and connect.

pg_dump/pg_restore get `-d <conninfo without password>` in argv and the password as
PGPASSWORD on stdin (see flyops.hosts)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flyops.errors import BadInput, OpsError
from flyops.secret import Secret, redact


def parse_url(url: Secret) -> dict:
    text = url.reveal() if isinstance(url, Secret) else str(url)
    if not text.startswith(("postgres://", "postgresql://")):
        raise BadInput("database URL must start with postgres:// or postgresql://",
                       fix="use the direct (not PgBouncer) URL, e.g. postgres://user:pass@host:5432/db")
    try:
        params = conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        raise BadInput("database URL cannot be parsed (check quoting of special characters)") from None
    if not params.get("dbname"):
        raise BadInput(f"database URL for {display(url, params)} names no database")
    return params


def display(url: Secret, params: dict | None = None) -> str:
    """user@host:port/db — never the password."""
    p = params if params is not None else conninfo_to_dict(url.reveal())
    return f"{p.get('user', '')}@{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"


def dbname(url: Secret) -> str:
    return parse_url(url)["dbname"]


def password(url: Secret) -> Secret | None:
    pw = parse_url(url).get("password")
    return Secret(pw) if pw else None


def conninfo_without_password(url: Secret, dbname: str | None = None) -> str:
    """For `-d` in argv: every parameter except the password."""
    p = {k: v for k, v in parse_url(url).items() if k != "password"}
    if dbname:
        p["dbname"] = dbname
    return make_conninfo(**p)


def with_dbname(url: Secret, dbname: str) -> Secret:
    """The same URL pointing at another database on the same server."""
    parse_url(url)
    parts = urlsplit(url.reveal())
    return Secret(urlunsplit(parts._replace(path="/" + quote(dbname, safe=""))))


def with_address(url: Secret, host: str, port: int) -> Secret:
    """The same URL through another address (a tunnel's local end)."""
    parse_url(url)
    parts = urlsplit(url.reveal())
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
    return Secret(urlunsplit(parts._replace(netloc=netloc)))


def address(url: Secret) -> tuple[str, int]:
    p = parse_url(url)
    return p.get("host") or "localhost", int(p.get("port") or 5432)


def libpq_secrets(url: Secret) -> dict[str, Secret]:
    pw = password(url)
    return {"PGPASSWORD": pw} if pw else {}


def connect(url: Secret, *, autocommit: bool = True, **kwargs) -> psycopg.Connection:
    """psycopg connection; failures become OpsError naming host and db, never the password."""
    params = parse_url(url)
    try:
        return psycopg.connect(url.reveal(), autocommit=autocommit, connect_timeout=15, **kwargs)
    except psycopg.OperationalError as e:
        secrets = [url] + ([Secret(params["password"])] if params.get("password") else [])
        msg = redact(str(e).strip(), secrets)
        raise OpsError(f"cannot connect to database {display(url, params)}: {msg}",
                       fix="check the host is reachable from here and the credentials in env/<env>.env") from None
