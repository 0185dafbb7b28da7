package db_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// beginTick locks the town for a tick in a transaction rolled back at the test's end
// unless the test commits it.
func beginTick(t *testing.T, b *testBundle, townID string) (pgx.Tx, *db.TownTx) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(ctx) })
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	return tx, tt
}

// TestTickReadsTheStateItReadUntilItWrites: after the snapshot, an action's read of a bead
// by id is served from the snapshot's rows — no statement — until the tick writes beads;
// the next read then goes to the database and sees the write (two moves of one bead in one
// tick both apply). LoadState reads again only the tables the actions wrote.
func TestTickReadsTheStateItReadUntilItWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)

	_, tt := beginTick(t, b, townID)
	snap, err := tt.LoadSnapshot(ctx)
	require.NoError(t, err)
	tracer.Take()

	res, err := tt.ApplyActions(ctx, []reconciler.Action{
		reconciler.TransitionBead{BeadID: issue, From: reconciler.StatusOpen, To: reconciler.StatusInProgress, Reason: "one"},
		reconciler.TransitionBead{BeadID: issue, From: reconciler.StatusInProgress, To: reconciler.StatusClosed, Reason: "two"},
	})
	require.NoError(t, err)
	require.Equal(t, 2, res.Applied, "the second move saw the first")
	require.Len(t, named(tracer.Take(), "BeadGet"), 1, "the first read came from the snapshot, the second (after a write) from the database")

	after, err := tt.LoadState(ctx)
	require.NoError(t, err)
	reads := tracer.Take()
	require.Len(t, named(reads, "BeadListForSnapshot"), 1, "beads were written: read again")
	require.Empty(t, named(reads, "RigListByTown"), "rigs were not written: not read again")
	require.Empty(t, named(reads, "AgentListForSnapshot"), "agents were not written: not read again")
	after.Index()
	require.Equal(t, reconciler.StatusClosed, after.Bead(issue).Status)
	require.Equal(t, snap.Rigs, after.Rigs)

	// Nothing written since: a second LoadState sends nothing at all.
	again, err := tt.LoadState(ctx)
	require.NoError(t, err)
	require.Empty(t, tracer.Take())
	require.Equal(t, after.Beads, again.Beads)
}

// TestWrittenStateSeesEveryWriteOfTheQueries checks the write-behind's reading of which
// state tables a statement writes against every query of sql/queries, found here by a
// case-insensitive pattern: a query the write-behind misreads would let a tick serve a
// read from a snapshot its own write had outdated.
func TestWrittenStateSeesEveryWriteOfTheQueries(t *testing.T) {
	t.Parallel()
	writes := regexp.MustCompile(`(?i)\b(insert\s+into|update|delete\s+from)\s+(beads|agents|bead_dependencies|review_metadata|rigs|convoy_metadata)\b`)
	files, err := filepath.Glob("../sql/queries/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	checked := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, query := range strings.Split(string(text), "-- name: ")[1:] {
			query = "-- name: " + query
			name, _, _ := strings.Cut(query, "\n")
			seen := db.WrittenState(query)
			for _, m := range writes.FindAllStringSubmatch(query, -1) {
				require.Contains(t, seen, strings.ToLower(m[2]), "%s (%s) writes %s", name, f, m[2])
				checked++
			}
			if strings.Contains(strings.ToUpper(query), "DELETE FROM") {
				require.Len(t, seen, 6, "%s: a delete cascades; every table counts as written", name)
			}
		}
	}
	require.Greater(t, checked, 30, "the queries' writes of state tables")
	require.Equal(t, []string{"beads"}, db.WrittenState("WITH x AS (SELECT 1) UPDATE beads SET status = $1"))
	require.Empty(t, db.WrittenState("-- name: BeadEventInsert :exec\nINSERT INTO bead_events (town_id) VALUES ($1)"))
	require.Equal(t, []string{"bead_dependencies"}, db.WrittenState("INSERT INTO bead_dependencies (town_id) VALUES ($1)"))
}

// TestConvoyProgressAsksOnlyForBeadsThatTrackAConvoy: with the snapshot read, a bead that
// tracks no convoy (its edges unwritten since) finishes without the convoy lookup; the
// tasks of a convoy still update it, and it closes when both are done.
func TestConvoyProgressAsksOnlyForBeadsThatTrackAConvoy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, rigID := b.town(t)
	convoy, tasks := b.convoy(t, townID, rigID, reconciler.MergeModeAndMerge, false)
	loose := b.issue(t, townID, rigID, "in no convoy")
	b.tick(t, townID, nil)

	tx, tt := beginTick(t, b, townID)
	_, err := tt.LoadSnapshot(ctx)
	require.NoError(t, err)
	tracer.Take()
	res, err := tt.ApplyActions(ctx, []reconciler.Action{
		reconciler.TransitionBead{BeadID: loose, To: reconciler.StatusClosed, Reason: "done"},
		reconciler.TransitionBead{BeadID: tasks[0], To: reconciler.StatusClosed, Reason: "done"},
		reconciler.TransitionBead{BeadID: tasks[1], To: reconciler.StatusClosed, Reason: "done"},
	})
	require.NoError(t, err)
	require.Equal(t, 3, res.Applied)
	require.Len(t, named(tracer.Take(), "BeadListTracked"), 2, "asked for the two tasks, not for the loose issue")
	require.NoError(t, tx.Commit(ctx))
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, convoy).Status, "both tasks done: the convoy closed")
}

// TestFeedRowsGoOutTogetherInTheirScope: a scope's activity-feed rows go out as one
// statement, in the order they were logged, with the empty agent and old value stored as
// NULL; a scope that fails takes its rows with it and no other's; rows logged before a
// DELETE are written before it (the cascade removes them, no foreign-key error).
func TestFeedRowsGoOutTogetherInTheirScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	store := b.store
	townID, rigID := b.town(t)
	kept := b.issue(t, townID, rigID, "kept")
	gone := b.issue(t, townID, rigID, "deleted in the tick")
	b.tick(t, townID, nil)

	tx, tt := beginTick(t, b, townID)
	tracer.Take()
	scope := func(fail bool, values ...string) {
		t.Helper()
		_, _, err := tt.Scope(ctx, func(db.Querier) error {
			for _, v := range values {
				require.NoError(t, tt.LogBeadEvent(ctx, kept, "fields_updated", v))
			}
			if fail {
				return errors.New("the scope fails")
			}
			return nil
		})
		require.Equal(t, fail, err != nil)
	}
	scope(false, "a")
	scope(true, "b", "c")
	scope(false, "d", "e", "f")
	_, _, err := tt.Scope(ctx, func(q db.Querier) error {
		require.NoError(t, tt.LogBeadEvent(ctx, gone, "fields_updated", "x"))
		// Held back like the tick's own BeadDelete (a sqlc ":exec" statement).
		_, err := q.Exec(ctx, "-- name: BeadDelete :exec\nDELETE FROM beads WHERE town_id = $1 AND bead_id = $2", townID, gone)
		return err
	})
	require.NoError(t, err)
	require.NoError(t, tt.Flush(ctx))
	sent := tracer.Take()
	require.Len(t, named(sent, "BeadEventInsertMany"), 1, "d, e, f in one statement")
	require.Len(t, named(sent, "BeadEventInsert"), 2, "a alone, x alone before the DELETE")
	require.NoError(t, tx.Commit(ctx))

	rows, err := store.Pool.Query(ctx, `SELECT new_value, agent_id IS NULL AND old_value IS NULL FROM bead_events
		WHERE town_id = $1 AND bead_id = $2 AND event_type = 'fields_updated' ORDER BY bead_event_id`, townID, kept)
	require.NoError(t, err)
	var values []string
	for rows.Next() {
		var v string
		var nulls bool
		require.NoError(t, rows.Scan(&v, &nulls))
		require.True(t, nulls, "empty agent and old value are NULL")
		values = append(values, v)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"a", "d", "e", "f"}, values)
	var left int
	require.NoError(t, store.Pool.QueryRow(ctx, `SELECT count(*) FROM bead_events WHERE town_id = $1 AND bead_id = $2`, townID, gone).Scan(&left))
	require.Zero(t, left)
}
