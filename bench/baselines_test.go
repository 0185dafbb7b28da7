package bench

import (
	"context"
	"log/slog"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
)

// The tick floor's script runs against the schema as it is: each execution is one whole
// tick (its event appended and processed, a reconciler_ticks and a tick_inputs row, its
// job gone), so a migration that breaks the script fails here rather than in a long run.
func TestTickFloorWritesWholeTicks(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skip("pgbench is not installed")
	}
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewEmptyURL(t)
	const clients, towns = 2, 3
	tps, err := tickFloorTPS(ctx, url, clients, towns, time.Second, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Positive(t, tps)

	pool, err := db.Connect(ctx, url, 2)
	require.NoError(t, err)
	defer pool.Close()
	var events, processed, ticks, inputs, jobs, townsTicked int
	require.NoError(t, pool.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM town_events),
  (SELECT count(*) FROM town_events WHERE state = 'processed'),
  (SELECT count(*) FROM reconciler_ticks),
  (SELECT count(*) FROM tick_inputs),
  (SELECT count(*) FROM river_job WHERE kind = 'bench_floor_tick'),
  (SELECT count(DISTINCT town_id) FROM reconciler_ticks)`).Scan(&events, &processed, &ticks, &inputs, &jobs, &townsTicked))
	require.Positive(t, ticks)
	require.Equal(t, ticks, processed, "a tick marks its event processed")
	require.Equal(t, ticks, inputs, "a tick records its inputs")
	require.LessOrEqual(t, events-processed, clients, "only ticks cut short at the end leave their event")
	require.LessOrEqual(t, jobs, clients, "a tick deletes its job")
	require.Equal(t, towns, townsTicked, "the ticks spread over every town")
	require.InDelta(t, float64(ticks), tps, 0.5*float64(ticks)+10, "pgbench's rate is ticks per second")
}
