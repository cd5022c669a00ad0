-- The states that grow with a timeline (an incident's, a maintenance's) are rewritten whole
-- on every write, and only ever read whole, by the application: stored as `json` (the text
-- as written, validated) rather than `jsonb`, PostgreSQL no longer converts tens of
-- kilobytes into its binary form on each write (docs/PERFORMANCE.md, "Publishing API").
-- The columns that SQL filters and sorts by are kept beside the state as before; nothing
-- reads inside these states in SQL. Existing rows keep their content (as jsonb's text).
ALTER TABLE rm_incidents ALTER COLUMN state TYPE json USING state::json;
ALTER TABLE rm_maintenances ALTER COLUMN state TYPE json USING state::json;

-- A change of type may reset the column's compression: keep lz4 (see V6).
DO $$
BEGIN
    ALTER TABLE rm_incidents ALTER COLUMN state SET COMPRESSION lz4;
    ALTER TABLE rm_maintenances ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server: states stay compressed with pglz';
END
$$;
