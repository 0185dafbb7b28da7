package db_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/db"
)

// A checkpoint leaves out exactly the generated columns of the state tables (Postgres
// computes them on restore and refuses values for them): a generated column added to a
// state table without its entry here would break every replay from a checkpoint.
func TestCheckpointOmitsTheGeneratedColumns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rows, err := b.store.Pool.Query(context.Background(), `
SELECT c.relname::text, a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = ANY ($1::text[]::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
ORDER BY c.relname, a.attnum`, db.CheckpointTables)
	require.NoError(t, err)
	got := map[string][]string{}
	for rows.Next() {
		var tbl, col string
		require.NoError(t, rows.Scan(&tbl, &col))
		got[tbl] = append(got[tbl], col)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, db.CheckpointGenerated, got)
}
