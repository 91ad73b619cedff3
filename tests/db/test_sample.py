"""The sample database loads, is deterministic, and has every feature the drills rely on."""

from __future__ import annotations

import psycopg
import pytest

from flyops.db.sample import (
    SAMPLE_COUNTS,
    SAMPLE_EVENTS,
    SAMPLE_EXTENSIONS,
    SAMPLE_LARGE_OBJECTS,
    SAMPLE_MIGRATION_HEAD,
    SAMPLE_SMOKE_QUERIES,
    seed_sample,
)
from flyops.errors import PreconditionFailed

FINGERPRINT = """
SELECT md5(string_agg(t, '|' ORDER BY t)) FROM (
  SELECT 'u' || md5(string_agg(u::text, ',' ORDER BY id)) AS t FROM users u
  UNION ALL SELECT 'a' || md5(string_agg(a::text, ',' ORDER BY id)) FROM accounts a
  UNION ALL SELECT 'o' || md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o
  UNION ALL SELECT 'e' || md5(string_agg(e::text, ',' ORDER BY id)) FROM events e
  UNION ALL SELECT 'l' || md5(string_agg(md5(lo_get(blob_oid)), ',' ORDER BY id)) FROM attachments
) s
"""


def test_seed_produces_the_documented_database(pg, make_db):
    db = make_db("sample")
    counts = seed_sample(pg.url(db))
    assert counts == SAMPLE_COUNTS
    with psycopg.connect(pg.url(db).reveal()) as c:
        q = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
        assert q("SELECT max(version) FROM schema_migrations") == SAMPLE_MIGRATION_HEAD
        assert q("SELECT value FROM ar_internal_metadata WHERE key = 'environment'") == "production"
        assert q("SELECT count(*) FROM events") == SAMPLE_EVENTS
        assert q("SELECT count(*) FROM pg_largeobject_metadata") == SAMPLE_LARGE_OBJECTS
        exts = {r[0] for r in c.execute("SELECT extname FROM pg_extension").fetchall()}
        assert set(SAMPLE_EXTENSIONS) <= exts
        assert q("SELECT relkind FROM pg_class WHERE relname = 'events'") == "p"  # partitioned
        assert q("SELECT relkind FROM pg_class WHERE relname = 'order_totals_by_status'") == "m"  # matview
        assert q("SELECT typtype FROM pg_type WHERE typname = 'order_status'") == "e"  # enum
        assert q("SELECT data_type FROM information_schema.columns "
                 "WHERE table_name = 'orders' AND column_name = 'details'") == "jsonb"
        for sql in SAMPLE_SMOKE_QUERIES:
            assert q(sql) is True, sql


def test_seed_is_deterministic(pg, make_db):
    fingerprints = []
    for _ in range(2):
        db = make_db("sample")
        seed_sample(pg.url(db))
        with psycopg.connect(pg.url(db).reveal()) as c:
            fingerprints.append(c.execute(FINGERPRINT).fetchone()[0])
    assert fingerprints[0] == fingerprints[1]


def test_seed_refuses_a_database_that_has_rails_tables(pg, make_db):
    db = make_db("sample")
    seed_sample(pg.url(db))
    with pytest.raises(PreconditionFailed, match="schema_migrations"):
        seed_sample(pg.url(db))


def test_connection_failure_does_not_leak_the_url(pg):
    url = pg.url("no_such_db")
    with pytest.raises(PreconditionFailed) as info:
        seed_sample(url)
    assert pg.password.reveal() not in str(info.value)
    assert pg.password.reveal() not in repr(info.value.__cause__)
