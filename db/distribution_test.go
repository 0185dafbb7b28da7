package db_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db/dbtest"
)

// globalTables are not per town: reference data, bookkeeping of the whole fleet, and
// River's tables (which stay on one node: the coordinator, in a Citus deployment).
var globalTables = map[string]string{
	"tick_action_types":         "reference table (replicated to every node)",
	"rollup_watermarks":         "fleet bookkeeping (coordinator)",
	"gastown_schema_migrations": "migrations (coordinator)",
}

// TestSchemaIsDistributableByTown checks what distributing the schema by town_id (Citus)
// needs, against the migrated schema itself: every table of town state has a town_id
// column, every primary key and unique index includes it (a distributed table's unique
// constraints must contain the distribution column), and every foreign key between them
// joins on it (co-location: the referencing and referenced rows live on the same node).
func TestSchemaIsDistributableByTown(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.NewPool(t)
	type tableRow struct {
		name    string
		hasTown bool
	}
	rows, err := pool.Query(ctx, `
SELECT c.relname,
       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'town_id' AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname NOT LIKE 'river\_%'`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tableRow, error) {
		var tr tableRow
		return tr, r.Scan(&tr.name, &tr.hasTown)
	})
	require.NoError(t, err)
	var townTables []string
	for _, tr := range tables {
		if _, global := globalTables[tr.name]; global {
			continue
		}
		require.True(t, tr.hasTown, "table %s has no town_id: it cannot be distributed by town (or list it in globalTables with why)", tr.name)
		townTables = append(townTables, tr.name)
	}
	require.Contains(t, townTables, "beads")

	// Unique indexes (primary keys included) of town tables must contain town_id.
	rows, err = pool.Query(ctx, `
SELECT t.relname, i.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (x.indkey)
WHERE n.nspname = 'public' AND x.indisunique AND NOT t.relispartition
GROUP BY t.relname, i.relname`)
	require.NoError(t, err)
	type indexRow struct {
		table, index string
		cols         []string
	}
	indexes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (indexRow, error) {
		var ir indexRow
		return ir, r.Scan(&ir.table, &ir.index, &ir.cols)
	})
	require.NoError(t, err)
	for _, ir := range indexes {
		if slices.Contains(townTables, ir.table) {
			require.Contains(t, ir.cols, "town_id", "unique index %s on %s (%s) lacks town_id", ir.index, ir.table, strings.Join(ir.cols, ", "))
		}
	}

	// Foreign keys between town tables must join on town_id.
	rows, err = pool.Query(ctx, `
SELECT conname, conrelid::regclass::text, confrelid::regclass::text,
       (SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = conrelid AND attnum = ANY (conkey)),
       (SELECT array_agg(attname::text) FROM pg_attribute WHERE attrelid = confrelid AND attnum = ANY (confkey))
FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace`)
	require.NoError(t, err)
	type fkRow struct {
		name, from, to   string
		fromCols, toCols []string
	}
	foreign, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fkRow, error) {
		var f fkRow
		return f, r.Scan(&f.name, &f.from, &f.to, &f.fromCols, &f.toCols)
	})
	require.NoError(t, err)
	fks := 0
	for _, f := range foreign {
		if !slices.Contains(townTables, f.from) {
			continue
		}
		require.Contains(t, f.fromCols, "town_id", "foreign key %s of %s does not join on town_id", f.name, f.from)
		require.Contains(t, f.toCols, "town_id", "foreign key %s of %s does not join on town_id", f.name, f.from)
		fks++
	}
	require.Positive(t, fks)
}
