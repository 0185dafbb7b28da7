package db_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
	sqlfiles "gastown/sql"
)

// seedTicks writes known tick rows: town A ticks three times in minute 0 and once in
// minute 1; town B once in minute 0.
func seedTicks(t *testing.T, b *testBundle, base time.Time) (townA, townB string) {
	t.Helper()
	ctx := context.Background()
	mk := func() string {
		tw, err := b.store.CreateTown(ctx, db.NewID(), "d", reconciler.TownConfig{}, base)
		require.NoError(t, err)
		return tw.ID
	}
	townA, townB = mk(), mk()
	type row struct {
		town                                  string
		at                                    time.Duration
		drained, wallUS, pending, violations  int
		byType                                string
		attempted, succeeded, failed, skipped int
	}
	rows := []row{
		{townA, 5 * time.Second, 2, 10_000, 0, 0, `{"dispatch_agent": 2}`, 2, 0, 0, 0},
		{townA, 15 * time.Second, 1, 20_000, 3, 1, `{"dispatch_agent": 1, "poll_pr": 1}`, 2, 1, 1, 1},
		{townA, 25 * time.Second, 0, 600_000, 5, 1, `{}`, 0, 1, 0, 0},
		{townA, 65 * time.Second, 4, 30_000, 1, 0, `{"poll_pr": 3}`, 3, 0, 0, 0},
		{townB, 10 * time.Second, 7, 40_000, 2, 0, `{"transition_bead": 1}`, 0, 0, 0, 0},
	}
	for i, r := range rows {
		_, err := b.store.Pool.Exec(ctx, `INSERT INTO reconciler_ticks (tick_id, town_id, started_at, wall_clock_us,
			events_drained, pending_event_count, invariant_violations, actions_by_type, actions_emitted,
			side_effects_attempted, side_effects_succeeded, side_effects_failed, actions_skipped)
			VALUES ($1, $2, $3, $4, $5, $6, $7, gastown_encode_actions($8::jsonb), (SELECT coalesce(sum(value::int), 0) FROM jsonb_each_text($8::jsonb)), $9, $10, $11, $12)`,
			1000+i, r.town, base.Add(r.at), r.wallUS, r.drained, r.pending, r.violations, r.byType, r.attempted, r.succeeded, r.failed, r.skipped)
		require.NoError(t, err)
	}
	_, err := b.store.Pool.Exec(ctx, `INSERT INTO town_events (town_id, event_id, event_type, state, last_error, processed_at, created_at)
		VALUES ($1, gen_random_uuid(), 'agent_done', 'dead', 'boom', $2, $2),
		       ($1, gen_random_uuid(), 'agent_dispatch_failed', 'processed', NULL, $2, $2),
		       ($3, gen_random_uuid(), 'agent_dispatch_failed', 'processed', NULL, $2, $2)`, townA, base.Add(30*time.Second), townB)
	require.NoError(t, err)
	return townA, townB
}

type result struct {
	cols []string
	rows [][]any
}

func runDashboard(t *testing.T, b *testBundle, name string, town any, from, to time.Time) result {
	t.Helper()
	src, err := fs.ReadFile(sqlfiles.Dashboards, "dashboards/"+name+".sql")
	require.NoError(t, err)
	rows, err := b.store.Pool.Query(context.Background(), string(src), town, from, to, "1 minute")
	require.NoError(t, err, name)
	defer rows.Close()
	var res result
	for _, f := range rows.FieldDescriptions() {
		res.cols = append(res.cols, f.Name)
	}
	for rows.Next() {
		v, err := rows.Values()
		require.NoError(t, err)
		res.rows = append(res.rows, v)
	}
	require.NoError(t, rows.Err(), name)
	return res
}

func TestDashboardQueries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	townA, townB := seedTicks(t, b, base)
	from, to := base, base.Add(5*time.Minute)

	// Every file runs, for a town and for the fleet.
	entries, err := fs.ReadDir(sqlfiles.Dashboards, "dashboards")
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".sql"); ok {
			runDashboard(t, b, name, townA, from, to)
			runDashboard(t, b, name, nil, from, to)
			n++
		}
	}
	require.Equal(t, 11, n)

	r := runDashboard(t, b, "events_drained", townA, from, to)
	require.Equal(t, []string{"time", "ticks", "events_drained", "events_per_tick"}, r.cols)
	require.Len(t, r.rows, 2)
	require.EqualValues(t, 3, r.rows[0][1])
	require.EqualValues(t, 3, r.rows[0][2])
	require.EqualValues(t, 1.0, r.rows[0][3])
	r = runDashboard(t, b, "events_drained", nil, from, to)
	require.EqualValues(t, 4, r.rows[0][1], "fleet: A's three ticks and B's one")
	require.EqualValues(t, 10, r.rows[0][2])

	r = runDashboard(t, b, "actions_by_type", townA, from, to)
	require.Equal(t, []string{"time", "action_type", "actions"}, r.cols)
	require.Equal(t, [][]any{{r.rows[0][0], "dispatch_agent", int32(3)}, {r.rows[0][0], "poll_pr", int32(1)}, {r.rows[2][0], "poll_pr", int32(3)}}, r.rows)

	r = runDashboard(t, b, "side_effects", townA, from, to)
	require.Equal(t, []string{"time", "attempted", "succeeded", "failed"}, r.cols)
	require.Equal(t, []any{int32(4), int32(2), int32(1)}, r.rows[0][1:])

	r = runDashboard(t, b, "invariant_violations", townA, from, to)
	require.Equal(t, []string{"time", "violations", "open_now"}, r.cols)
	require.EqualValues(t, 1, r.rows[0][1])
	require.EqualValues(t, 0, r.rows[1][1])

	r = runDashboard(t, b, "wall_clock", townA, from, to)
	require.Equal(t, []string{"time", "p50_ms", "p99_ms", "max_ms", "threshold_ms"}, r.cols)
	require.EqualValues(t, 20.0, r.rows[0][1])
	require.EqualValues(t, 600.0, r.rows[0][3])
	require.EqualValues(t, 500.0, r.rows[0][4])

	r = runDashboard(t, b, "pending_queue", nil, from, to)
	require.Equal(t, []string{"time", "pending"}, r.cols)
	require.EqualValues(t, 7, r.rows[0][1], "A's deepest 5 + B's 2")

	r = runDashboard(t, b, "fleet_ticks_per_second", nil, from, to)
	require.Equal(t, []string{"time", "ticks_per_second", "towns"}, r.cols)
	require.InDelta(t, 4.0/60, r.rows[0][1], 1e-9)
	require.EqualValues(t, 2, r.rows[0][2])

	r = runDashboard(t, b, "fleet_slowest_towns", nil, from, to)
	require.Equal(t, []string{"town_id", "ticks", "p99_ms", "max_ms"}, r.cols)
	require.Len(t, r.rows, 2)
	require.EqualValues(t, 600.0, r.rows[0][3], "town A first")

	r = runDashboard(t, b, "fleet_growing_queues", nil, from, to)
	require.Equal(t, []string{"town_id", "pending_first", "pending_last", "growth"}, r.cols)
	require.Len(t, r.rows, 1, "A went 0 → 1; B has one tick")
	require.EqualValues(t, 1, r.rows[0][3])

	r = runDashboard(t, b, "fleet_dead_events", nil, from, to)
	require.Equal(t, []string{"town_id", "event_type", "dead", "last_error", "last_at"}, r.cols)
	require.Len(t, r.rows, 1)
	require.Equal(t, "boom", r.rows[0][3])

	r = runDashboard(t, b, "fleet_dispatch_failures", nil, from, to)
	require.Equal(t, []string{"time", "failures", "towns"}, r.cols)
	require.EqualValues(t, 2, r.rows[0][1])
	r = runDashboard(t, b, "fleet_dispatch_failures", townB, from, to)
	require.EqualValues(t, 1, r.rows[0][1])
}

func TestRollupAndRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	townA, _ := seedTicks(t, b, base)

	n, err := b.store.RollupTicks(ctx, time.Now(), 30*time.Second, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 3, n, "A minute 0, A minute 1, B minute 0")
	again, err := b.store.RollupTicks(ctx, time.Now(), 30*time.Second, 24*time.Hour)
	require.NoError(t, err)
	require.Zero(t, again, "nothing new since the watermark (the last minutes re-roll idempotently)")
	var ticks, drained, wallMax, pendingLast int
	var byType string
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT ticks, events_drained, wall_clock_us_max, pending_last, actions_by_type::text
		FROM reconciler_ticks_minutely WHERE town_id = $1 AND minute = $2`, townA, base).Scan(&ticks, &drained, &wallMax, &pendingLast, &byType))
	require.Equal(t, 3, ticks)
	require.Equal(t, 3, drained)
	require.Equal(t, 600_000, wallMax)
	require.Equal(t, 5, pendingLast)
	require.JSONEq(t, `{"dispatch_agent": 3, "poll_pr": 1}`, byType)

	// Retention: an old daily partition goes, today's stays; old rollup rows go.
	old := time.Now().UTC().AddDate(0, 0, -10)
	_, err = b.store.Pool.Exec(ctx, "CREATE TABLE reconciler_ticks_"+old.Format("20060102")+" PARTITION OF reconciler_ticks FOR VALUES FROM ('"+
		old.Format("2006-01-02")+"') TO ('"+old.AddDate(0, 0, 1).Format("2006-01-02")+"')")
	require.NoError(t, err)
	_, err = b.store.Pool.Exec(ctx, `INSERT INTO reconciler_ticks_minutely (town_id, minute, ticks, events_drained, events_dead,
		actions_emitted, actions_skipped, side_effects_attempted, side_effects_succeeded, side_effects_failed,
		invariant_violations, wall_clock_us_sum, wall_clock_us_max, pending_max, pending_last)
		VALUES ($1, now() - interval '100 days', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)`, townA)
	require.NoError(t, err)
	res, err := b.store.MaintainTicks(ctx, time.Now(), db.RetentionOptions{Ticks: 7 * 24 * time.Hour, Rollup: 90 * 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, 1, res.PartitionsDropped)
	require.Equal(t, 1, res.RollupRowsPruned)
	var exists bool
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "reconciler_ticks_"+time.Now().UTC().Format("20060102")).Scan(&exists))
	require.True(t, exists, "today's partition stays")
	var left int
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT count(*) FROM reconciler_ticks WHERE town_id = $1", townA).Scan(&left))
	require.Equal(t, 4, left, "recent ticks are kept")
}
