-- A database that is harder to dump and restore than pgbench: several schemas, enums,
-- domains, contrib extensions, large objects, partitions, generated columns, sequences,
-- views and materialized views, triggers, row-level security, non-ASCII and quoted
-- identifiers, bytea, jsonb, arrays, ranges, and Rails' bookkeeping tables.
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE SCHEMA crypto;
CREATE EXTENSION pgcrypto WITH SCHEMA crypto;
CREATE SCHEMA billing;
CREATE SCHEMA "Weird Schema";

CREATE TYPE billing.status AS ENUM ('draft', 'open', 'paid', 'void');
CREATE DOMAIN billing.money_cents AS bigint CHECK (VALUE >= 0);
CREATE DOMAIN public.email AS citext CHECK (VALUE ~ '^[^@]+@[^@]+$');

CREATE TABLE public.schema_migrations (version varchar PRIMARY KEY);
INSERT INTO public.schema_migrations VALUES ('20240101000000'), ('20251120093000'), ('20250101000000');
CREATE TABLE public.ar_internal_metadata (key varchar PRIMARY KEY, value varchar,
  created_at timestamp(6) NOT NULL DEFAULT now(), updated_at timestamp(6) NOT NULL DEFAULT now());
INSERT INTO public.ar_internal_metadata (key, value) VALUES ('environment', 'production');

CREATE SEQUENCE billing.invoice_no START 1000 INCREMENT 7;
CREATE TABLE public.users (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email public.email UNIQUE NOT NULL,
  name text NOT NULL,
  prefs hstore,
  tags text[] NOT NULL DEFAULT '{}',
  profile jsonb,
  avatar bytea,
  password_hash text,
  name_upper text GENERATED ALWAYS AS (upper(name)) STORED
);
INSERT INTO public.users (email, name, prefs, tags, profile, avatar, password_hash)
SELECT 'user' || g || '@example.com',
       CASE g % 4 WHEN 0 THEN 'Zoë ' || g WHEN 1 THEN '渡辺 ' || g WHEN 2 THEN 'O''Brien "q" ' || g ELSE E'tab\there ' || g END,
       hstore(ARRAY['lang', 'tz'], ARRAY[CASE WHEN g % 2 = 0 THEN 'de' ELSE 'ja' END, 'UTC']),
       ARRAY['t' || (g % 5), 'all'],
       jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 3 = 0), 'emoji', '🐘'),
       decode(md5(g::text), 'hex') || '\x00ff'::bytea,
       crypto.crypt('pw' || g, '$1$saltsalt')
FROM generate_series(1, 500) g;

CREATE TABLE billing.invoices (
  id bigint NOT NULL DEFAULT nextval('billing.invoice_no'),
  user_id bigint NOT NULL REFERENCES public.users(id),
  status billing.status NOT NULL DEFAULT 'draft',
  amount billing.money_cents NOT NULL,
  issued_on date NOT NULL,
  valid tstzrange,
  qty int4range,
  total_with_tax numeric GENERATED ALWAYS AS (amount * 1.19) STORED,
  PRIMARY KEY (id, issued_on)
) PARTITION BY RANGE (issued_on);
CREATE TABLE billing.invoices_2024 PARTITION OF billing.invoices FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE billing.invoices_2025 PARTITION OF billing.invoices FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE billing.invoices_rest PARTITION OF billing.invoices DEFAULT;
INSERT INTO billing.invoices (user_id, status, amount, issued_on, valid, qty)
SELECT 1 + g % 500, (ARRAY['draft','open','paid','void'])[1 + g % 4]::billing.status, g * 13,
       date '2024-01-01' + (g % 900), tstzrange(timestamptz '2024-01-01' + g * interval '1 hour', NULL),
       int4range(g % 10, g % 10 + 5)
FROM generate_series(1, 1200) g;

CREATE TABLE billing.audit (id serial PRIMARY KEY, invoice_id bigint, old_status billing.status,
  new_status billing.status, at timestamptz DEFAULT now());
CREATE FUNCTION billing.log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO billing.audit (invoice_id, old_status, new_status) VALUES (NEW.id, OLD.status, NEW.status);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER invoices_status AFTER UPDATE ON billing.invoices FOR EACH ROW EXECUTE FUNCTION billing.log_status();
UPDATE billing.invoices SET status = 'paid' WHERE id % 50 = 0 AND status <> 'paid';

CREATE TABLE "Weird Schema"."Tâble ""Quoted""" ("Mixed Case" int PRIMARY KEY, "naïve column" text, "select" text);
INSERT INTO "Weird Schema"."Tâble ""Quoted""" SELECT g, 'ünïcödé ' || g, 'kw' FROM generate_series(1, 50) g;

CREATE TABLE public.documents (id serial PRIMARY KEY, tenant text NOT NULL, body text, blob oid);
INSERT INTO public.documents (tenant, body, blob)
SELECT CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END, 'doc ' || g,
       lo_from_bytea(0, convert_to(repeat('large object ' || g, 100), 'UTF8'))
FROM generate_series(1, 12) g;
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.documents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON public.documents USING (tenant = current_setting('app.tenant', true));

CREATE VIEW public.paid_invoices AS SELECT i.id, u.email, i.amount FROM billing.invoices i JOIN public.users u ON u.id = i.user_id WHERE i.status = 'paid';
CREATE MATERIALIZED VIEW billing.monthly AS
  SELECT date_trunc('month', issued_on) AS month, count(*) AS n, sum(amount) AS total FROM billing.invoices GROUP BY 1;
CREATE UNIQUE INDEX ON billing.monthly (month);
CREATE INDEX users_profile_gin ON public.users USING gin (profile);
CREATE INDEX users_lower_name ON public.users (lower(name));

CREATE TABLE public.empty_table (id int);
COMMENT ON TABLE public.users IS 'Benutzer — people';
SELECT setval('billing.invoice_no', 99999);
