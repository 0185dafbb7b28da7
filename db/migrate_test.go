package db_test

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
	sqlfiles "gastown/sql"
)

// TestCompactTickRowMigrationKeepsRows takes a database with ticks in the first row shape
// through 00004 (compact row) and back, and checks that every tick survives both ways with
// its figures, in the daily partition of its day.
func TestCompactTickRowMigrationKeepsRows(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.NewPool(t)
	require.NoError(t, db.Migrate(ctx, pool, quiet))
	sqlDB := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = sqlDB.Close() })
	fsys, err := fs.Sub(sqlfiles.Migrations, "migrations")
	require.NoError(t, err)
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys, goose.WithTableName("gastown_schema_migrations"))
	require.NoError(t, err)

	_, err = provider.DownTo(ctx, 3)
	require.NoError(t, err)
	town := db.NewID()
	day := time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC) // a day with no partition yet
	_, err = pool.Exec(ctx, `INSERT INTO reconciler_ticks (tick_id, town_id, started_at, clock_at, wall_clock_us,
		events_drained, events_dead, actions_emitted, actions_by_type, pending_event_count, next_tick_at, worker_id)
		VALUES (7, $1, $2::timestamptz, $2::timestamptz, 1234, 40000, 2, 4, '{"dispatch_agent": 3, "poll_pr": 1}', 5, $2::timestamptz + interval '5 seconds', 'w1')`, town, day)
	require.NoError(t, err)

	_, err = provider.UpTo(ctx, 4)
	require.NoError(t, err)
	var (
		partition                      string
		wall, drained, pending, nextMS int32
		dead                           int16
		byType                         []byte
	)
	require.NoError(t, pool.QueryRow(ctx, `SELECT tableoid::regclass::text, wall_clock_us, events_drained, pending_event_count,
		next_tick_ms, events_dead, actions_by_type FROM reconciler_ticks WHERE town_id = $1 AND tick_id = 7`, town).
		Scan(&partition, &wall, &drained, &pending, &nextMS, &dead, &byType))
	require.Equal(t, "reconciler_ticks_20260314", partition)
	require.Equal(t, []int32{1234, 40000, 5, 5000}, []int32{wall, drained, pending, nextMS})
	require.Equal(t, int16(2), dead)
	require.Equal(t, map[string]int{"dispatch_agent": 3, "poll_pr": 1}, db.DecodeActionCounts(byType))

	_, err = provider.DownTo(ctx, 3)
	require.NoError(t, err)
	var next time.Time
	var byTypeJSON map[string]int
	require.NoError(t, pool.QueryRow(ctx, `SELECT tableoid::regclass::text, events_drained, next_tick_at, actions_by_type
		FROM reconciler_ticks WHERE town_id = $1 AND tick_id = 7`, town).Scan(&partition, &drained, &next, &byTypeJSON))
	require.Equal(t, map[string]int{"dispatch_agent": 3, "poll_pr": 1}, byTypeJSON)
	require.Equal(t, "reconciler_ticks_20260314", partition)
	require.Equal(t, int32(40000), drained)
	require.True(t, next.Equal(day.Add(5*time.Second)), "next_tick_at %s", next)

	_, err = provider.Up(ctx)
	require.NoError(t, err)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks WHERE town_id = $1`, town).Scan(&n))
	require.Equal(t, 1, n)
}

// TestActionCodesMatchSchema keeps db's action codes, the reconciler's action types and
// the tick_action_types table in step, and checks that Go's encoding and SQL's decoding
// of a tick's action counts agree.
func TestActionCodesMatchSchema(t *testing.T) {
	ctx := context.Background()
	pool := dbtest.NewPool(t)
	for _, at := range reconciler.ActionTypes {
		require.Contains(t, db.ActionCodes, at, "action type %s has no code in db/tick_actions.go", at)
	}
	rows, err := pool.Query(ctx, `SELECT code, name FROM tick_action_types`)
	require.NoError(t, err)
	inTable := map[reconciler.ActionType]byte{}
	for rows.Next() {
		var code int16
		var name string
		require.NoError(t, rows.Scan(&code, &name))
		inTable[reconciler.ActionType(name)] = byte(code)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, db.ActionCodes, inTable, "tick_action_types must match db's action codes (add a migration)")

	counts := map[reconciler.ActionType]int{reconciler.ActDispatchAgent: 2, reconciler.ActPollPR: 70000, reconciler.ActEmitEvent: 1}
	enc := db.EncodeActionCounts(counts)
	require.Len(t, enc, 9)
	want := map[string]int{"dispatch_agent": 2, "poll_pr": 65535, "emit_event": 1}
	require.Equal(t, want, db.DecodeActionCounts(enc))
	var fromSQL map[string]int
	require.NoError(t, pool.QueryRow(ctx, `SELECT gastown_actions_by_type($1)`, enc).Scan(&fromSQL))
	require.Equal(t, want, fromSQL)
	var back []byte
	require.NoError(t, pool.QueryRow(ctx, `SELECT gastown_encode_actions(gastown_actions_by_type($1))`, enc).Scan(&back))
	require.Equal(t, enc, back)
	require.Empty(t, db.EncodeActionCounts(nil))
}
