-- Forge: Connect-on-Forge and Forge Remote installations in the same registry (docs/forge.md).
--
-- `client_key` stays the row's key, the key of grants, events, audit entries, access tokens and
-- Marketplace rows. An installation that only Forge knows (no Connect clientKey) gets an
-- internal key `forge:<installation uuid>` that the admin API and the CLI never show (its
-- `client_key` is null there); when a Connect `installed` later names its installation id,
-- the row takes the real clientKey, with everything that hangs off it.

-- `connect` (Connect only), `connect_on_forge` (a Connect tenant with a Forge installation id),
-- `forge` (known only from Forge Invocation Tokens and Forge events).
ALTER TABLE installations ADD COLUMN flavour TEXT NOT NULL DEFAULT 'connect';
-- The Forge installation id as the lower-case bare uuid (FITs carry the ARI, Forge lifecycle
-- payloads the bare uuid); `installation_id` keeps the form shown to the vendor.
ALTER TABLE installations ADD COLUMN forge_installation_id TEXT;
ALTER TABLE installations ADD COLUMN forge_app_id TEXT;
ALTER TABLE installations ADD COLUMN forge_environment_type TEXT;
ALTER TABLE installations ADD COLUMN forge_environment_id TEXT;
ALTER TABLE installations ADD COLUMN forge_api_base_url TEXT;
-- The licence the last Forge Invocation Token carried (`app.license`), recorded in the
-- background when it changes, and when it was seen.
ALTER TABLE installations ADD COLUMN fit_license_active INTEGER;
ALTER TABLE installations ADD COLUMN fit_license_evaluation INTEGER;
ALTER TABLE installations ADD COLUMN fit_trial_end TEXT;
ALTER TABLE installations ADD COLUMN fit_license_type TEXT;
ALTER TABLE installations ADD COLUMN fit_entitlement_id TEXT;
ALTER TABLE installations ADD COLUMN fit_entitlement_number TEXT;
ALTER TABLE installations ADD COLUMN fit_license_seen_at TEXT;
-- The app system token (`x-forge-oauth-system`), sealed like shared secrets when SECRETS_KEY is
-- set, and its expiry. Never shown.
ALTER TABLE installations ADD COLUMN forge_system_token TEXT;
ALTER TABLE installations ADD COLUMN forge_system_token_expires_at TEXT;
-- The Forge License API (GET {FORGE_API_URL}/forge/app/v1/license): the last answer, when it
-- was read, and the earliest time it may be read again (5 minutes, or a 429's Retry-After).
ALTER TABLE installations ADD COLUMN forge_api_license_active INTEGER;
ALTER TABLE installations ADD COLUMN forge_api_license_evaluation INTEGER;
ALTER TABLE installations ADD COLUMN forge_api_license_type TEXT;
ALTER TABLE installations ADD COLUMN forge_api_trial_end TEXT;
ALTER TABLE installations ADD COLUMN forge_api_entitlement_id TEXT;
ALTER TABLE installations ADD COLUMN forge_api_entitlement_number TEXT;
ALTER TABLE installations ADD COLUMN forge_api_checked_at TEXT;
ALTER TABLE installations ADD COLUMN forge_api_retry_after TEXT;
ALTER TABLE installations ADD COLUMN forge_api_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE installations ADD COLUMN forge_api_last_error TEXT;

-- Connect tenants whose `installed` already carried an installationId are Connect on Forge.
-- Only well-formed ids that no other row also holds are carried over (the unique index below
-- would refuse a duplicate); the next `installed` or FIT fills in the rest.
UPDATE installations
SET forge_installation_id = lower(replace(installation_id, 'ari:cloud:ecosystem::installation/', '')),
    flavour = 'connect_on_forge'
WHERE installation_id IS NOT NULL
  AND length(replace(installation_id, 'ari:cloud:ecosystem::installation/', '')) = 36
  AND NOT EXISTS (
      SELECT 1 FROM installations o
      WHERE o.client_key <> installations.client_key
        AND lower(replace(o.installation_id, 'ari:cloud:ecosystem::installation/', ''))
          = lower(replace(installations.installation_id, 'ari:cloud:ecosystem::installation/', '')));

-- NULLs never collide: Connect-only rows have none.
CREATE UNIQUE INDEX installations_forge_installation_id ON installations (forge_installation_id);
CREATE INDEX installations_flavour ON installations (flavour);
CREATE INDEX installations_fit_trial_end ON installations (fit_trial_end);
CREATE INDEX installations_forge_api_retry_after ON installations (forge_api_retry_after);
