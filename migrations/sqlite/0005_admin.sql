-- Admin registry (issue 4). The list answer carries `total`, a COUNT(*) over the same filters
-- as the page. With only the single-column status index, a count filtered by status and
-- product or license state reads every matching table row (~80 ms at 100k installations on
-- SQLite); this covering index answers those counts, and the page queries' filters, from the
-- index alone.
CREATE INDEX installations_admin_filters ON installations (status, license_state, product_type);
