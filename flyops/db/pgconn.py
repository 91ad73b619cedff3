"""Database URLs as Secrets: parse, show without the password, rebuild, and connect.

Everything here goes through libpq's own parser (psycopg's `conninfo_to_dict`, i.e.
PQconninfoParse) and builder (`make_conninfo`), never string surgery: a URL is whatever libpq
takes, `postgresql:///db?host=/var/run/postgresql` (socket), `postgres://u%40x:p%2Fw@[::1]:5433/db`
(IPv6, percent-encoded user and password), `?host=`/`?port=` in the query, or a
`key=value` conninfo string. A rebuilt URL (another database, another address) is a
`key=value` conninfo string, which libpq, psycopg and every pg_* tool take as `-d`.

pg_dump/pg_restore get `-d <conninfo without password>` in argv and the password as
PGPASSWORD on stdin (see flyops.db.hosts)."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flyops.errors import BadInput, OpsError
from flyops.secret import Secret, redact

_EXAMPLE = "postgres://user:pass@host:5432/db, or postgresql:///db?host=/var/run/postgresql"


def is_conninfo(text: str) -> bool:
    """Whether `text` is meant as a connection string (a URL or key=value), not a name."""
    return text.startswith(("postgres://", "postgresql://")) or "=" in text


def parse_url(url: Secret) -> dict:
    text = url.reveal() if isinstance(url, Secret) else str(url)
    if not is_conninfo(text):
        raise BadInput("database URL must be a postgres:// or postgresql:// URL (or a libpq key=value string)",
                       fix=f"use the direct (not PgBouncer) URL, e.g. {_EXAMPLE}")
    try:
        params = conninfo_to_dict(text)
    except psycopg.ProgrammingError as e:
        # libpq's message quotes no password (it names the bad option or URI part); redact anyway
        # libpq quotes the URI in some messages ("... in URI: "postgres://u:pw@[::1/db""): mask it
        msg = redact(" ".join(str(e).split()), [url] if isinstance(url, Secret) else [])
        msg = re.sub(r'(://[^:/@\s"]*:)[^@\s"]*@', r"\1***@", msg)
        raise BadInput(f"database URL cannot be parsed: {msg}",
                       fix="percent-encode special characters in user and password (@ is %40, / is %2F)") from None
    if not params.get("dbname"):
        raise BadInput(f"database URL for {display(url, params)} names no database", fix=f"e.g. {_EXAMPLE}")
    return params


def display(url: Secret, params: dict | None = None) -> str:
    """user@host:port/db — never the password. An IPv6 address in brackets, a socket folder as is."""
    p = params if params is not None else conninfo_to_dict(url.reveal())
    host = p.get("host") or p.get("hostaddr") or "localhost"
    if ":" in host and not host.startswith("/") and "," not in host:
        host = f"[{host}]"
    return f"{p.get('user', '')}@{host}:{p.get('port', '5432')}/{p.get('dbname', '')}"


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
    """The same server and credentials, another database (a libpq conninfo string)."""
    return Secret(make_conninfo(**{**parse_url(url), "dbname": dbname}))


def with_address(url: Secret, host: str, port: int) -> Secret:
    """The same database and credentials through another address (a tunnel's local end)."""
    p = {k: v for k, v in parse_url(url).items() if k != "hostaddr"}
    return Secret(make_conninfo(**{**p, "host": host, "port": str(port)}))


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
