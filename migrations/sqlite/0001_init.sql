-- connect-keeper schema, version 1. Never edit a migration once it has run: add a new file.
-- The same file name exists in migrations/sqlite and migrations/postgres; only types differ
-- (timestamps and booleans use each dialect's type). Times and ids are written by the application, not SQL.

-- One row per tenant (clientKey). Kept forever; `uninstalled` erases only the secret.
CREATE TABLE installations (
    client_key                  TEXT PRIMARY KEY,
    app_key                     TEXT NOT NULL,
    base_url                    TEXT NOT NULL,
    -- lower-case host of base_url, for joining Marketplace licenses by cloudSiteHostname
    base_host                   TEXT NOT NULL,
    display_url                 TEXT,
    product_type                TEXT NOT NULL,
    description                 TEXT,
    -- HMAC key for HS256 both ways, so it must be kept in clear; NULL once uninstalled
    shared_secret               TEXT,
    server_version              TEXT,
    plugins_version             TEXT,
    oauth_client_id             TEXT,
    installation_id             TEXT,
    service_entitlement_number  TEXT,
    entitlement_id              TEXT,
    entitlement_number          TEXT,
    cloud_id                    TEXT,
    status                      TEXT NOT NULL,
    installed_at                TEXT NOT NULL,
    updated_at                  TEXT NOT NULL,
    uninstalled_at              TEXT,
    last_seen_at                TEXT,
    -- iat of the last accepted signed install: an older replayed token cannot roll back
    last_install_iat            BIGINT,
    -- the last `lic` the product bound into a verified token, and when
    lic_last_seen               TEXT,
    lic_seen_at                 TEXT,
    -- the product's license endpoint (GET {baseUrl}/rest/atlassian-connect/1/addons/{key})
    host_license_active         INTEGER,
    host_license_type           TEXT,
    host_license_evaluation     INTEGER,
    host_license_entitlement_id TEXT,
    host_license_entitlement_number TEXT,
    host_license_sen            TEXT,
    host_checked_at             TEXT,
    host_next_check_at          TEXT,
    host_failures               INTEGER NOT NULL DEFAULT 0,
    host_last_error             TEXT,
    -- the winning Marketplace license row for this installation (see marketplace_licenses)
    mp_license_id               TEXT,
    mp_license_type             TEXT,
    mp_tier                     TEXT,
    mp_user_count               BIGINT,
    mp_status                   TEXT,
    mp_maintenance_start        TEXT,
    mp_maintenance_end          TEXT,
    mp_trial_start              TEXT,
    mp_trial_end                TEXT,
    mp_company                  TEXT,
    mp_country                  TEXT,
    mp_region                   TEXT,
    mp_technical_contact        TEXT,
    mp_billing_contact          TEXT,
    mp_last_updated             TEXT,
    mp_synced_at                TEXT,
    -- bumped by every change that can alter a request's verification or license decision;
    -- other processes poll it to refresh their caches
    changed_at                  TEXT NOT NULL
);
CREATE INDEX installations_installed_at ON installations (installed_at, client_key);
CREATE INDEX installations_base_url ON installations (base_url, client_key);
CREATE INDEX installations_trial_end ON installations (mp_trial_end, client_key);
CREATE INDEX installations_status ON installations (status);
CREATE INDEX installations_changed_at ON installations (changed_at);
CREATE INDEX installations_cloud_id ON installations (cloud_id);
CREATE INDEX installations_base_host ON installations (base_host);
CREATE INDEX installations_entitlement_id ON installations (entitlement_id);
CREATE INDEX installations_entitlement_number ON installations (entitlement_number);

-- Append-only history of verified lifecycle callbacks (payload without the shared secret).
CREATE TABLE lifecycle_events (
    id          TEXT PRIMARY KEY,          -- UUIDv7: sorts by arrival
    client_key  TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    token_iat   BIGINT,
    payload     TEXT NOT NULL
);
CREATE INDEX lifecycle_events_client ON lifecycle_events (client_key, id);

-- Vendor grants: free use, trial extensions, and redeemed access tokens. Never deleted.
CREATE TABLE grants (
    id              TEXT PRIMARY KEY,
    client_key      TEXT NOT NULL,
    kind            TEXT NOT NULL,         -- free | trial_extension | access_token
    starts_at       TEXT NOT NULL,
    ends_at         TEXT,
    reason          TEXT,
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    revoked_at      TEXT,
    revoked_by      TEXT,
    access_token_id TEXT,
    changed_at      TEXT NOT NULL
);
CREATE INDEX grants_client ON grants (client_key, created_at);
CREATE INDEX grants_changed_at ON grants (changed_at);

-- Vendor-issued access tokens; only a SHA-256 of the token is kept.
CREATE TABLE access_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    note        TEXT,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    client_key  TEXT,                      -- bound in advance to one site, or NULL
    redeemed_by TEXT,
    redeemed_at TEXT,
    revoked_at  TEXT,
    revoked_by  TEXT,
    changed_at  TEXT NOT NULL
);

-- Admin API bearer tokens made by `admin-token create`; only a SHA-256 is kept.
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);

-- Who changed what and why (grants, extensions, revocations, tokens).
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    client_key TEXT,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target_id  TEXT,
    reason     TEXT,
    details    TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_log_client ON audit_log (client_key, id);

-- Every license row the Marketplace reported, matched to an installation or not.
CREATE TABLE marketplace_licenses (
    license_key            TEXT PRIMARY KEY, -- appEntitlementId, else addonLicenseId, else licenseId
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
    client_key             TEXT,             -- the matched installation, or NULL
    synced_at              TEXT NOT NULL,
    raw                    TEXT NOT NULL
);
CREATE INDEX marketplace_licenses_client ON marketplace_licenses (client_key);

-- Cluster-wide leases (e.g. one Marketplace sync at a time across instances).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
