-- Fast substring search for the admin list's `q` (base URL, company, contact JSON): an FTS5
-- index with the trigram tokenizer (https://sqlite.org/fts5.html#the_trigram_tokenizer),
-- which finds the rows containing a string of 3 or more characters, ignoring case, from the
-- index instead of a scan of every row. The list query takes the index's rows as candidates
-- and still applies its LIKE test to them, so the answer is the scan's answer; queries of
-- fewer than 3 characters (which trigrams cannot look up) scan as before.
--
-- FTS5 keys its rows by an integer. The rowid of `installations` is not stable (the table has
-- no INTEGER PRIMARY KEY, and VACUUM may renumber such rowids), so installation_search_ids
-- gives every installation a permanent one. The index is external-content: it stores only
-- the trigrams, the text stays in `installations` (read through installation_search_source
-- when the index is rebuilt). The triggers below keep it in step with every write.
CREATE TABLE installation_search_ids (
    id         INTEGER PRIMARY KEY,
    client_key TEXT NOT NULL UNIQUE
);

CREATE VIEW installation_search_source AS
    SELECT s.id AS id, i.base_url, i.mp_company, i.mp_technical_contact, i.mp_billing_contact
    FROM installation_search_ids s JOIN installations i ON i.client_key = s.client_key;

CREATE VIRTUAL TABLE installation_search USING fts5(
    base_url, mp_company, mp_technical_contact, mp_billing_contact,
    content = 'installation_search_source', content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER installation_search_insert AFTER INSERT ON installations BEGIN
    INSERT INTO installation_search_ids (client_key) VALUES (new.client_key);
    INSERT INTO installation_search (rowid, base_url, mp_company, mp_technical_contact,
                                     mp_billing_contact)
    VALUES ((SELECT id FROM installation_search_ids WHERE client_key = new.client_key),
            new.base_url, new.mp_company, new.mp_technical_contact, new.mp_billing_contact);
END;

-- Only when a searched column really changed: a Marketplace sync rewrites mp_* on every row.
-- The 'delete' command must be given the values that were indexed, which are old.*.
CREATE TRIGGER installation_search_update
AFTER UPDATE OF base_url, mp_company, mp_technical_contact, mp_billing_contact ON installations
WHEN old.base_url IS NOT new.base_url
  OR old.mp_company IS NOT new.mp_company
  OR old.mp_technical_contact IS NOT new.mp_technical_contact
  OR old.mp_billing_contact IS NOT new.mp_billing_contact
BEGIN
    INSERT INTO installation_search (installation_search, rowid, base_url, mp_company,
                                     mp_technical_contact, mp_billing_contact)
    VALUES ('delete',
            (SELECT id FROM installation_search_ids WHERE client_key = old.client_key),
            old.base_url, old.mp_company, old.mp_technical_contact, old.mp_billing_contact);
    INSERT INTO installation_search (rowid, base_url, mp_company, mp_technical_contact,
                                     mp_billing_contact)
    VALUES ((SELECT id FROM installation_search_ids WHERE client_key = new.client_key),
            new.base_url, new.mp_company, new.mp_technical_contact, new.mp_billing_contact);
END;

-- Installations are kept forever today; a deleted row leaves the index all the same.
CREATE TRIGGER installation_search_delete AFTER DELETE ON installations BEGIN
    INSERT INTO installation_search (installation_search, rowid, base_url, mp_company,
                                     mp_technical_contact, mp_billing_contact)
    VALUES ('delete',
            (SELECT id FROM installation_search_ids WHERE client_key = old.client_key),
            old.base_url, old.mp_company, old.mp_technical_contact, old.mp_billing_contact);
    DELETE FROM installation_search_ids WHERE client_key = old.client_key;
END;

-- The rows already there.
INSERT INTO installation_search_ids (client_key) SELECT client_key FROM installations;
INSERT INTO installation_search (installation_search) VALUES ('rebuild');
