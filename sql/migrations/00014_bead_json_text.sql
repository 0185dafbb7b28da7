-- The snapshot reads every bead of a town at every tick, and Postgres sends a jsonb value
-- by printing it as text: for a 10,000-bead town the labels and metadata columns took ~5 ms
-- of a ~17 ms read on the server (BENCHMARKS.md, thirteenth round). Their text, stored
-- beside them as generated columns, is sent as it is. Postgres computes them at every
-- write of a bead (a bead is written a few times in its life and read at every tick of
-- its town); they are never written by hand and never indexed, so updates stay HOT.
--
-- The columns are added in a DO block so that sqlc, which reads these migrations as the
-- schema, does not see them: the generated queries and the Bead model are those of the
-- data model, and only the snapshot's own statement (db/fastscan.go snapshotBeadsSQL,
-- checked against sqlc's BeadListForSnapshot) reads the text columns.
-- Adding a stored generated column rewrites the table under an ACCESS EXCLUSIVE lock.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    ALTER TABLE beads
        ADD COLUMN labels_text text GENERATED ALWAYS AS (labels::text) STORED,
        ADD COLUMN metadata_text text GENERATED ALWAYS AS (metadata::text) STORED;
END
$$;
-- +goose StatementEnd

-- +goose Down
ALTER TABLE beads DROP COLUMN labels_text, DROP COLUMN metadata_text;
