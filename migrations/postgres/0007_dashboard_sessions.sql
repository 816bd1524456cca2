-- Vendor dashboard sign-in sessions (issue 12). The cookie carries a random secret; only its
-- SHA-256 is stored, so a copy of the database signs nobody in. A session belongs to one
-- admin token (admin_token_id) or to ADMIN_TOKEN (env_token_hash, the SHA-256 of the token
-- it was opened with): revoking the admin token, or changing ADMIN_TOKEN, ends its sessions
-- on the next request, on every instance. Sessions are in the database, not in memory, so an
-- instance behind the load balancer honours the sessions another one opened.
CREATE TABLE dashboard_sessions (
    id_hash        TEXT PRIMARY KEY,
    admin_token_id TEXT,
    env_token_hash TEXT,
    actor          TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    -- a one-time message for the next page (an access token just made), encrypted with a key
    -- derived from the cookie's secret, which the database never holds
    flash          TEXT
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
