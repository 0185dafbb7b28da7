package db_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// sqlTracer records the statements a pool's connections send.
type sqlTracer = dbtest.Statements

// named returns those of statements that are the sqlc query name.
func named(statements []string, name string) []string {
	var out []string
	for _, sql := range statements {
		if strings.HasPrefix(sql, "-- name: "+name+" ") {
			out = append(out, sql)
		}
	}
	return out
}

// tracedStore is a store on a fresh database whose statements tracer records.
func tracedStore(t *testing.T) (*db.Store, *sqlTracer) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dbtest.NewURL(t))
	require.NoError(t, err)
	tracer := &sqlTracer{}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return db.NewStore(pool), tracer
}

// tracedBundle is a test bundle on tracedStore.
func tracedBundle(t *testing.T) (*testBundle, *sqlTracer) {
	t.Helper()
	store, tracer := tracedStore(t)
	return &testBundle{store: store, now: testNow()}, tracer
}

// planNode is a node of EXPLAIN (FORMAT JSON): Output with VERBOSE, the actual rows with
// ANALYZE.
type planNode struct {
	NodeType       string     `json:"Node Type"`
	Output         []string   `json:"Output"`
	Relation       string     `json:"Relation Name"`
	Index          string     `json:"Index Name"`
	Rows           float64    `json:"Actual Rows"`
	Loops          float64    `json:"Actual Loops"`
	RemovedFilter  float64    `json:"Rows Removed by Filter"`
	RemovedRecheck float64    `json:"Rows Removed by Index Recheck"`
	Plans          []planNode `json:"Plans"`
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
	store, tracer := tracedStore(t)
	pool := store.Pool
	town, err := store.CreateTown(ctx, db.NewID(), "t", reconciler.TownConfig{}, testNow())
	require.NoError(t, err)

	for _, wait := range []bool{false, true} {
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		_, err = store.BeginTick(ctx, tx, town.ID, wait, 10, quiet)
		require.NoError(t, err)
		require.NoError(t, tx.Rollback(ctx))
	}
	var statements []string
	for _, sql := range tracer.Take() {
		if strings.Contains(sql, "FOR NO KEY UPDATE") && strings.Contains(sql, "nextval") {
			statements = append(statements, sql)
		}
	}
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
