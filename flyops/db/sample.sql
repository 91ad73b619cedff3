-- A small, deterministic, Rails-shaped sample database.
--
-- Seeded by `flyops.db.sample.seed_sample(url)` into a throwaway cluster before the demo
-- drill, and by the tests. Every value is derived from generate_series and md5 of fixed
-- strings, and every timestamp from a fixed epoch, so two seeds give identical dumps
-- (apart from OIDs pg_dump does not carry) and identical row counts.
--
-- It covers what makes Rails databases awkward to back up and restore:
--   * extensions from postgresql-contrib (citext for emails, pgcrypto for digests)
--   * an enum type, jsonb columns, foreign keys, unique and partial indexes
--   * a declaratively partitioned table (events, one partition per quarter + default)
--   * a materialized view (its data is restored by REFRESH in the dump)
--   * large objects (attachments.blob_oid points at them; fixed OIDs)
--   * schema_migrations with versions and ar_internal_metadata with the environment

CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'refunded', 'cancelled');

CREATE TABLE schema_migrations (
    version character varying NOT NULL PRIMARY KEY
);

CREATE TABLE ar_internal_metadata (
    key character varying NOT NULL PRIMARY KEY,
    value character varying,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email citext NOT NULL,
    name character varying NOT NULL,
    api_token_digest character varying NOT NULL,
    admin boolean NOT NULL DEFAULT false,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE UNIQUE INDEX index_users_on_email ON users (email);

CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    plan character varying NOT NULL,
    balance_cents bigint NOT NULL DEFAULT 0,
    settings jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE INDEX index_accounts_on_user_id ON accounts (user_id);

CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts (id),
    status order_status NOT NULL DEFAULT 'pending',
    total_cents bigint NOT NULL,
    details jsonb NOT NULL,
    created_at timestamp(6) without time zone NOT NULL,
    updated_at timestamp(6) without time zone NOT NULL
);
CREATE INDEX index_orders_on_account_id ON orders (account_id);
CREATE INDEX index_orders_on_details ON orders USING gin (details);
CREATE INDEX index_orders_pending ON orders (created_at) WHERE status = 'pending';

CREATE TABLE events (
    id bigint NOT NULL,
    user_id bigint NOT NULL REFERENCES users (id),
    name character varying NOT NULL,
    properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamp(6) without time zone NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_2024_q1 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE events_2024_q2 PARTITION OF events FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE TABLE attachments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    filename character varying NOT NULL,
    content_type character varying NOT NULL,
    blob_oid oid NOT NULL,
    checksum character varying NOT NULL
);

-- Rails bookkeeping -----------------------------------------------------------------------

INSERT INTO schema_migrations (version) VALUES
    ('20240105093000'), ('20240105093100'), ('20240112141500'), ('20240201080000'),
    ('20240215120000'), ('20240301101010'), ('20240320170500'), ('20240410090000');

INSERT INTO ar_internal_metadata (key, value, created_at, updated_at) VALUES
    ('environment', 'production', '2024-01-05 09:30:00', '2024-01-05 09:30:00'),
    ('schema_sha1', encode(digest('sample-schema-v8', 'sha1'), 'hex'), '2024-01-05 09:30:00', '2024-04-10 09:00:00');

-- Data --------------------------------------------------------------------------------------

INSERT INTO users (id, email, name, api_token_digest, admin, created_at, updated_at)
SELECT i,
       CASE WHEN i % 7 = 0 THEN 'User' || i || '@Example.COM' ELSE 'user' || i || '@example.com' END,
       'User ' || i,
       encode(digest('token-' || i, 'sha256'), 'hex'),
       i <= 3,
       timestamp '2024-01-01 00:00:00' + make_interval(mins => i * 97),
       timestamp '2024-01-01 00:00:00' + make_interval(mins => i * 97 + 5)
FROM generate_series(1, 1200) AS i;

INSERT INTO accounts (id, user_id, plan, balance_cents, settings, created_at, updated_at)
SELECT i,
       i,
       (ARRAY['free', 'starter', 'team', 'enterprise'])[1 + i % 4],
       (i * 7919) % 100000,
       jsonb_build_object('locale', (ARRAY['en', 'de', 'fr'])[1 + i % 3],
                          'newsletter', i % 2 = 0,
                          'seats', 1 + i % 25),
       timestamp '2024-01-01 00:00:00' + make_interval(mins => i * 97 + 10),
       timestamp '2024-01-01 00:00:00' + make_interval(mins => i * 97 + 10)
FROM generate_series(1, 1200) AS i;

INSERT INTO orders (id, account_id, status, total_cents, details, created_at, updated_at)
SELECT i,
       1 + (i * 31) % 1200,
       (ARRAY['pending', 'paid', 'shipped', 'refunded', 'cancelled']::order_status[])[1 + (i * 13) % 5],
       100 + (i * 2654435761) % 50000,
       jsonb_build_object(
           'sku', 'SKU-' || lpad(((i * 17) % 250)::text, 4, '0'),
           'quantity', 1 + i % 9,
           'coupon', CASE WHEN i % 11 = 0 THEN 'SPRING24' END,
           'lines', jsonb_build_array(jsonb_build_object('n', 1, 'md5', md5('order-' || i)))),
       timestamp '2024-01-02 00:00:00' + make_interval(mins => i * 61),
       timestamp '2024-01-02 00:00:00' + make_interval(mins => i * 61 + 30)
FROM generate_series(1, 3000) AS i;

INSERT INTO events (id, user_id, name, properties, created_at)
SELECT i,
       1 + (i * 37) % 1200,
       (ARRAY['sign_in', 'view_order', 'checkout', 'sign_out'])[1 + i % 4],
       jsonb_build_object('ip', '10.0.' || (i % 250) || '.' || (i * 7 % 250), 'ua', md5('ua-' || (i % 40))),
       timestamp '2024-01-01 00:00:00' + make_interval(mins => i * 151)
FROM generate_series(1, 2000) AS i;

-- Two large objects with fixed OIDs and deterministic content.
SELECT lo_from_bytea(91001, convert_to(repeat('%PDF-1.4 sample invoice ', 200), 'UTF8'));
SELECT lo_from_bytea(91002, decode(repeat(md5('sample-image'), 64), 'hex'));

INSERT INTO attachments (id, order_id, filename, content_type, blob_oid, checksum) VALUES
    (1, 1, 'invoice-1.pdf', 'application/pdf', 91001,
     md5(convert_to(repeat('%PDF-1.4 sample invoice ', 200), 'UTF8'))),
    (2, 2, 'photo-2.png', 'image/png', 91002,
     md5(decode(repeat(md5('sample-image'), 64), 'hex')));

SELECT setval('users_id_seq', 1200);
SELECT setval('accounts_id_seq', 1200);
SELECT setval('orders_id_seq', 3000);
SELECT setval('attachments_id_seq', 2);

-- A materialized view as dashboards use them ---------------------------------------------

CREATE MATERIALIZED VIEW order_totals_by_status AS
SELECT status, count(*) AS orders, sum(total_cents) AS total_cents
FROM orders
GROUP BY status
WITH DATA;
CREATE UNIQUE INDEX index_order_totals_by_status ON order_totals_by_status (status);

ANALYZE;
