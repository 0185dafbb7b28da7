-- Every unique key of town state includes town_id, so the schema can be distributed by
-- town (docs/scaling.md; db/TestSchemaIsDistributableByTown). invariant_violations was
-- the one table keyed by a global id alone.

-- +goose Up
ALTER TABLE invariant_violations DROP CONSTRAINT invariant_violations_pkey;
ALTER TABLE invariant_violations ADD PRIMARY KEY (town_id, violation_id);

-- +goose Down
ALTER TABLE invariant_violations DROP CONSTRAINT invariant_violations_pkey;
ALTER TABLE invariant_violations ADD PRIMARY KEY (violation_id);
