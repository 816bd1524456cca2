-- Fast substring search for the admin list's `q` (base URL, company, contact JSON): trigram
-- GIN indexes from the pg_trgm extension (https://www.postgresql.org/docs/current/pgtrgm.html),
-- which serve `ILIKE '%…%'` directly, so the list query is unchanged and PostgreSQL picks an
-- index when it pays (patterns of 3 or more characters). The index only finds candidates; ILIKE
-- is checked on each, so the answer is the scan's answer.
--
-- Creating an extension needs a privilege a vendor's database may not grant (pg_trgm is a
-- trusted extension: CREATE on the database is enough since PostgreSQL 13). Without it the
-- migration still succeeds, with a notice, and `q` scans the table as before; see
-- docs/operations.md for adding the indexes later.
--
-- A pg_trgm already installed is used from its own schema. Otherwise it goes to `public`
-- where that schema exists (extensions are per database; in a schema that is later dropped it
-- would take every dependent index with it), else to the current schema.
DO $$
DECLARE
    trgm name;
BEGIN
    SELECT n.nspname INTO trgm
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm IS NULL THEN
        IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') THEN
            CREATE EXTENSION pg_trgm SCHEMA public;
        ELSE
            CREATE EXTENSION pg_trgm;
        END IF;
        SELECT n.nspname INTO trgm
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    END IF;
    EXECUTE format('CREATE INDEX installations_search_base_url ON installations USING gin (base_url %I.gin_trgm_ops)', trgm);
    EXECUTE format('CREATE INDEX installations_search_company ON installations USING gin (mp_company %I.gin_trgm_ops)', trgm);
    EXECUTE format('CREATE INDEX installations_search_technical ON installations USING gin (mp_technical_contact %I.gin_trgm_ops)', trgm);
    EXECUTE format('CREATE INDEX installations_search_billing ON installations USING gin (mp_billing_contact %I.gin_trgm_ops)', trgm);
EXCEPTION WHEN OTHERS THEN
    -- everything in this block is undone; the table is searched by a scan
    RAISE NOTICE 'pg_trgm is not available (%): the installation search (q) scans the table', SQLERRM;
END
$$;
