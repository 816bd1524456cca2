-- Lifecycle tokens already applied, so that a captured signed callback cannot be replayed
-- with another body (docs/operations.md#lifecycle-replay). One row per token signature that
-- was applied: a second presentation with the same body (SHA-256) is a harmless retry, with
-- any other body it is refused. Rows are kept until the token expires (exp + leeway) and are
-- deleted after that by the next callback. Only hashes: the table holds no token.
CREATE TABLE lifecycle_tokens (
    signature_hash TEXT PRIMARY KEY,
    body_hash      TEXT NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX lifecycle_tokens_expires ON lifecycle_tokens (expires_at);

-- iat of the last enabled/disabled applied to the tenant: an older one arriving later (a
-- replay, or a retry overtaken by the next change) is ignored.
ALTER TABLE installations ADD COLUMN last_toggle_iat BIGINT;

-- Whether an outside source (the product's licence endpoint, the Marketplace) says the site is
-- licensed: the newest of them says active. Materialised beside license_state by the same code
-- (registry::license_view) so the admin list can filter on it (docs/licensing.md#lic_trust);
-- the UPDATE computes it once for the rows that exist, with the same rule (on a tie of times
-- the Marketplace wins).
ALTER TABLE installations ADD COLUMN license_corroborated BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE installations SET license_corroborated = CASE
    WHEN host_license_active IS NOT NULL AND host_checked_at IS NOT NULL
         AND (mp_status IS NULL OR COALESCE(mp_last_updated, mp_synced_at) IS NULL
              OR host_checked_at > COALESCE(mp_last_updated, mp_synced_at))
        THEN host_license_active
    WHEN mp_status IS NOT NULL AND COALESCE(mp_last_updated, mp_synced_at) IS NOT NULL
        THEN LOWER(mp_status) = 'active'
    ELSE FALSE
END;
