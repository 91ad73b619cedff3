"""The sample database: a small, deterministic, Rails-shaped schema and data set.

`seed_sample(url)` loads `sample.sql` into an empty database. The README's first command
seeds it into a throwaway cluster before the demo drill; the tests seed it into the `pg`
fixture. The constants below say what a restore of it must contain, so a test (or a
person) can check a drill's result against facts that do not depend on the backup code.
"""

from __future__ import annotations

from importlib import resources

import psycopg

from flyops.errors import PreconditionFailed
from flyops.secret import Secret

#: Exact row counts the seed produces (partitions counted on their own, as pg_class has them).
SAMPLE_COUNTS: dict[str, int] = {
    "public.schema_migrations": 8,
    "public.ar_internal_metadata": 2,
    "public.users": 1200,
    "public.accounts": 1200,
    "public.orders": 3000,
    "public.events_2024_q1": 867,
    "public.events_2024_q2": 868,
    "public.events_default": 265,
    "public.attachments": 2,
}
SAMPLE_EVENTS = 2000
SAMPLE_MIGRATION_HEAD = "20240410090000"
SAMPLE_EXTENSIONS = ("citext", "pgcrypto")
SAMPLE_LARGE_OBJECTS = 2

#: Smoke queries in the form `db.verify --level restore` takes them: each returns one
#: boolean row that must be true. Usable as a stack's `smoke_sql` for the sample.
SAMPLE_SMOKE_QUERIES: tuple[str, ...] = (
    "SELECT count(*) = 1200 FROM users",
    "SELECT count(*) > 0 FROM orders WHERE status = 'paid'",
    "SELECT EXISTS (SELECT 1 FROM users WHERE email = 'USER7@example.com')",  # citext works
    "SELECT sum(orders) = 3000 FROM order_totals_by_status",  # the matview has its data
    "SELECT (SELECT count(*) FROM events) = 2000",
    "SELECT bool_and(md5(lo_get(blob_oid)) = checksum) FROM attachments",
)


def sample_sql() -> str:
    """The text of `sample.sql` (shipped as package data)."""
    return resources.files("flyops.db").joinpath("sample.sql").read_text(encoding="utf-8")


def seed_sample(url: str | Secret) -> dict[str, int]:
    """Load the sample schema and data into the (empty) database at `url`, in one transaction.

    Refuses a database that already has a `schema_migrations` table, so it never mixes the
    sample into real data. Returns the row counts it produced (= `SAMPLE_COUNTS`).
    """
    conninfo = url.reveal() if isinstance(url, Secret) else url
    try:
        conn = psycopg.connect(conninfo, autocommit=False)
    except psycopg.OperationalError as exc:
        # libpq's message may quote the conninfo; keep only the first line and no URL
        raise PreconditionFailed(
            "cannot connect to the database to seed the sample",
            fix="check the URL and that the server is running",
        ) from _without_context(exc)
    with conn:
        existing = conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0]
        if existing is not None:
            raise PreconditionFailed(
                "refusing to seed the sample: the database already has a schema_migrations table",
                fix="seed into a new, empty database",
            )
        conn.execute(sample_sql())
        counts = {}
        for table in SAMPLE_COUNTS:
            counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 (fixed names)
    return counts


def _without_context(exc: Exception) -> Exception | None:
    """Drop an exception whose text may hold a conninfo; keep its type for debugging."""
    return RuntimeError(type(exc).__name__)
