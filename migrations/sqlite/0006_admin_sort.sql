-- Admin registry (issue 4): the keyset sort indexes also carry the filter columns.
--
-- A filtered page (e.g. status=enabled,installed&product=jira&sort=-installed_at) then walks
-- its sort index in order, tests the filters on the index entry itself, and stops after
-- `limit` matches: no sort of every matching row, and no table read for rows that do not
-- match. At 100k installations on SQLite that took such a page from ~60 ms to a few ms; the
-- worst case (a filter matching nothing) is one walk of an index (~15 ms). The
-- trial_end index also serves the "no trial end" tail of that order, by client_key.
-- They replace the narrower sort indexes, whose columns are their prefixes.
CREATE INDEX installations_admin_installed_at
    ON installations (installed_at, client_key, status, license_state, product_type);
CREATE INDEX installations_admin_base_url
    ON installations (base_url, client_key, status, license_state, product_type);
CREATE INDEX installations_admin_trial_end
    ON installations (effective_trial_end, client_key, status, license_state, product_type);
DROP INDEX installations_installed_at;
DROP INDEX installations_base_url;
DROP INDEX installations_effective_trial_end;
