-- The registry's license view (licensing::view), materialised so that the admin filters
-- `license=` and `trial_ends_before`, and the `trial_end` sort, are indexed SQL. Recomputed by
-- the application whenever an input changes, and swept as grants and trials run out.
ALTER TABLE installations ADD COLUMN license_state TEXT NOT NULL DEFAULT 'unlicensed';
ALTER TABLE installations ADD COLUMN license_source TEXT;
ALTER TABLE installations ADD COLUMN effective_trial_end TEXT;
CREATE INDEX installations_license_state ON installations (license_state, installed_at, client_key);
CREATE INDEX installations_effective_trial_end ON installations (effective_trial_end, client_key);
CREATE INDEX grants_ends_at ON grants (ends_at);
