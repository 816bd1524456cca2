-- Grants and access tokens on the request path (issue 3).

-- One access token serves one site: at most one grant per token, whatever the code does.
-- (NULL access_token_id — free grants and trial extensions — never collide.)
CREATE UNIQUE INDEX grants_access_token ON grants (access_token_id);
-- Other instances poll for changed tokens (store::installations::changed_since).
CREATE INDEX access_tokens_changed_at ON access_tokens (changed_at);
-- Listing the tokens bound in advance to, or redeemed by, one site.
CREATE INDEX access_tokens_redeemed_by ON access_tokens (redeemed_by);
CREATE INDEX access_tokens_client_key ON access_tokens (client_key);
