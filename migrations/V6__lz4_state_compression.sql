-- The states that grow with a timeline (an incident's, a maintenance's) are rewritten on
-- every write, and an idempotency record stores a whole answer: compressing them with lz4
-- rather than the default pglz makes those writes markedly cheaper (docs/PERFORMANCE.md,
-- "Publishing API"). Rows written before keep their compression until rewritten; both
-- read the same. A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE rm_incidents ALTER COLUMN state SET COMPRESSION lz4;
    ALTER TABLE rm_maintenances ALTER COLUMN state SET COMPRESSION lz4;
    ALTER TABLE api_idempotency ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available on this server: states stay compressed with pglz';
END
$$;
