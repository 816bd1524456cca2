-- License data from the product and the Marketplace (issue 5).

-- The background reader of the product's license endpoint picks due tenants by this column.
CREATE INDEX installations_host_next_check ON installations (host_next_check_at);
-- Marketplace licenses join installations by these too (after cloud_id and the install's
-- entitlement ids, which 0001 indexes already).
CREATE INDEX installations_host_license_entitlement_id ON installations (host_license_entitlement_id);
CREATE INDEX installations_host_license_entitlement_number ON installations (host_license_entitlement_number);
CREATE INDEX installations_service_entitlement_number ON installations (service_entitlement_number);
CREATE INDEX installations_host_license_sen ON installations (host_license_sen);

-- Rows of a Marketplace sync in progress. A run writes its pages here (a few pages per short
-- transaction, so lifecycle callbacks are never blocked for long) and only when every page
-- has arrived swaps them into marketplace_licenses and installations.mp_* in one
-- transaction. A failed run deletes its rows; the live tables are never touched by it.
CREATE TABLE marketplace_licenses_staging (
    run_id                 TEXT NOT NULL,
    license_key            TEXT NOT NULL,
    addon_key              TEXT,
    addon_license_id       TEXT,
    app_entitlement_id     TEXT,
    app_entitlement_number TEXT,
    license_id             TEXT,
    host_license_id        TEXT,
    cloud_id               TEXT,
    cloud_site_hostname    TEXT,
    hosting                TEXT,
    license_type           TEXT,
    tier                   TEXT,
    user_count             BIGINT,
    status                 TEXT,
    maintenance_start      TEXT,
    maintenance_end        TEXT,
    evaluation_start       TEXT,
    evaluation_end         TEXT,
    company                TEXT,
    country                TEXT,
    region                 TEXT,
    technical_contact      TEXT,
    billing_contact        TEXT,
    last_updated           TEXT,
    client_key             TEXT,
    synced_at              TEXT NOT NULL,
    raw                    TEXT NOT NULL,
    -- derived for installations.mp_trial_*: evaluation rows only
    trial_start            TEXT,
    trial_end              TEXT,
    -- fixed-width digits, larger = preferred when one installation has several rows
    -- (made by the application so the rule lives in one place; digits sort the same
    -- under every collation)
    rank_key               TEXT NOT NULL,
    PRIMARY KEY (run_id, license_key)
);
CREATE INDEX marketplace_licenses_staging_client ON marketplace_licenses_staging (run_id, client_key);
