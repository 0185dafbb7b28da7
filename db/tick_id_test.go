package db_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// lockTracer records the statements sent in batches (the tick's pipelines) that lock a
// town row.
type lockTracer struct {
	mu  sync.Mutex
	sql []string
}

func (*lockTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (*lockTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (*lockTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (*lockTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
func (l *lockTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "FOR NO KEY UPDATE") && strings.Contains(d.SQL, "nextval") {
		l.mu.Lock()
		l.sql = append(l.sql, d.SQL)
		l.mu.Unlock()
	}
}

// planNode is a node of EXPLAIN (VERBOSE, FORMAT JSON).
type planNode struct {
	NodeType string     `json:"Node Type"`
	Output   []string   `json:"Output"`
	Plans    []planNode `json:"Plans"`
}

// mentions reports whether n or a node below it outputs an expression containing s.
func (n planNode) mentions(s string) bool {
	for _, o := range n.Output {
		if strings.Contains(o, s) {
			return true
		}
	}
	for _, c := range n.Plans {
		if c.mentions(s) {
			return true
		}
	}
	return false
}

// lockRows finds the LockRows node.
func (n planNode) lockRows() *planNode {
	if n.NodeType == "LockRows" {
		return &n
	}
	for _, c := range n.Plans {
		if l := c.lockRows(); l != nil {
			return l
		}
	}
	return nil
}

// TestTickIDIsDrawnOnceTheTownIsLocked checks, on the plans of both lock statements (a
// tick's and a waiting dry-run's), that the tick id comes from above the row lock. Drawn
// beside FOR UPDATE it came from the scan, before the lock: a dry-run that waited for a
// tick, or a tick delayed between scan and lock, held an id below that of a tick that
// committed first, and counted as "not yet applied" what that tick had applied
// (processed_tick_id <= tick_id: the breaker's failures, replays).
func TestTickIDIsDrawnOnceTheTownIsLocked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(dbtest.NewURL(t))
	require.NoError(t, err)
	tracer := &lockTracer{}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := db.NewStore(pool)
	town, err := store.CreateTown(ctx, db.NewID(), "t", reconciler.TownConfig{}, testNow())
	require.NoError(t, err)

	for _, wait := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = store.BeginTick(ctx, tx, town.ID, wait, 10, quiet)
		require.NoError(t, err)
		require.NoError(t, tx.Rollback(ctx))
	}
	tracer.mu.Lock()
	statements := tracer.sql
	tracer.mu.Unlock()
	require.Len(t, statements, 2, "the lock statements of a tick and of a waiting dry-run")
	for _, sql := range statements {
		var plans []struct{ Plan planNode }
		require.NoError(t, pool.QueryRow(ctx, "EXPLAIN (VERBOSE, FORMAT JSON) "+sql, town.ID).Scan(&plans))
		require.Len(t, plans, 1)
		lock := plans[0].Plan.lockRows()
		require.NotNil(t, lock, "the statement locks the row:\n%s", sql)
		require.False(t, lock.mentions("nextval"), "the tick id is drawn above the lock, not in the scan below it:\n%s", mustJSON(t, plans))
		require.True(t, plans[0].Plan.mentions("nextval"))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	return string(b)
}
