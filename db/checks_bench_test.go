package db_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// BenchmarkEventRowWrites appends event rows, one INSERT statement each, to three copies
// of town_events that differ only in their CHECK constraints: the schema's (enumerations
// checked by a cast to an enum type, migration 00011), the IN lists it had before, and
// none. Postgres rebuilds a
// table's CHECK expressions at every INSERT and UPDATE statement; the ratios of the three
// show what that costs (BENCHMARKS.md).
func BenchmarkEventRowWrites(b *testing.B) {
	store := dbtest.NewStore(b)
	ctx := context.Background()
	town, err := store.CreateTown(ctx, db.NewID(), "bench", reconciler.TownConfig{}, time.Now())
	require.NoError(b, err)
	var inList string
	require.NoError(b, store.Pool.QueryRow(ctx, `SELECT string_agg(quote_literal(e), ', ') FROM unnest(enum_range(NULL::town_event_type)) e`).Scan(&inList))
	for _, ddl := range []string{
		`CREATE TABLE bench_events_none (LIKE town_events INCLUDING DEFAULTS INCLUDING INDEXES)`,
		`ALTER TABLE bench_events_none ADD FOREIGN KEY (town_id) REFERENCES towns ON DELETE CASCADE`,
		`CREATE TABLE bench_events_in_list (LIKE town_events INCLUDING DEFAULTS INCLUDING INDEXES)`,
		`ALTER TABLE bench_events_in_list ADD FOREIGN KEY (town_id) REFERENCES towns ON DELETE CASCADE,
			ADD CHECK (event_type IN (` + inList + `)), ADD CHECK (jsonb_typeof(payload) = 'object'),
			ADD CHECK (state IN ('pending', 'processed', 'dead'))`,
	} {
		_, err := store.Pool.Exec(ctx, ddl)
		require.NoError(b, err)
	}
	for _, c := range []struct{ name, table string }{
		{"checks=enum_cast", "town_events"}, {"checks=in_list", "bench_events_in_list"}, {"checks=none", "bench_events_none"},
	} {
		table := c.table
		b.Run(c.name, func(b *testing.B) {
			tx, err := store.Pool.Begin(ctx)
			require.NoError(b, err)
			defer tx.Rollback(ctx) //nolint:errcheck
			insert := fmt.Sprintf(`INSERT INTO %s (town_id, event_id, event_type, payload, created_at)
VALUES ($1, $2, 'agent_done', '{}', now())`, table)
			// Statements go out in pipelined batches, as a tick sends its writes: the
			// server's work per statement shows, not a round trip's latency.
			const perBatch = 100
			for b.Loop() {
				var ins pgx.Batch
				for range perBatch {
					ins.Queue(insert, town.ID, db.NewID())
				}
				if err := tx.SendBatch(ctx, &ins).Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/event")
		})
	}
}
