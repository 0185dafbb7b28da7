package db_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// requirePendingListed checks that pending_events lists exactly the town's events whose
// state is pending (migration 00015: the list replaced an index on the state).
func requirePendingListed(t *testing.T, _ *testBundle, q db.Querier, townID, when string) []int64 {
	t.Helper()
	ctx := context.Background()
	var listed, pending []int64
	require.NoError(t, q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq), '{}') FROM pending_events WHERE town_id = $1`, townID).Scan(&listed))
	require.NoError(t, q.QueryRow(ctx, `SELECT coalesce(array_agg(seq ORDER BY seq), '{}') FROM town_events WHERE town_id = $1 AND state = 'pending'`, townID).Scan(&pending))
	require.Equal(t, pending, listed, "%s: pending_events lists the pending events", when)
	return listed
}

func nudgeDelivered() db.NewEvent {
	return db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
}

// Every writer of town_events keeps pending_events exact: appends one at a time and in a
// batch (an idempotency key used twice lists nothing twice), a drain, a replay's reset,
// the delete of the town.
func TestPendingEventsListExactlyThePendingEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	requirePendingListed(t, b, b.store.Pool, townID, "after the town's first tick")

	b.append(t, townID, nudgeDelivered())
	keyed := nudgeDelivered()
	keyed.IdempotencyKey = "once"
	batch, err := b.store.AppendEvents(ctx, b.store.Pool, townID, []db.NewEvent{nudgeDelivered(), keyed, keyed, nudgeDelivered()})
	require.NoError(t, err)
	require.Len(t, batch, 4)
	require.True(t, batch[2].Duplicate, "the second use of the key inserts nothing")
	again, err := b.store.AppendEvents(ctx, b.store.Pool, townID, []db.NewEvent{keyed})
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.True(t, again[0].Duplicate)
	require.Len(t, requirePendingListed(t, b, b.store.Pool, townID, "after the appends"), 4)

	dr, _, _ := b.tick(t, townID, nil)
	require.Equal(t, 4, dr.Applied)
	require.Empty(t, requirePendingListed(t, b, b.store.Pool, townID, "after the drain"))

	// A replay makes exactly the named events pending again, in a transaction it rolls back.
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	later := b.append(t, townID, nudgeDelivered())[0].Seq
	require.NoError(t, db.ReplayPending(ctx, tx, townID, []int64{batch[0].Seq, batch[3].Seq}))
	require.Equal(t, []int64{batch[0].Seq, batch[3].Seq}, requirePendingListed(t, b, tx, townID, "in the replay"))
	require.NoError(t, tx.Rollback(ctx))
	require.Equal(t, []int64{later}, requirePendingListed(t, b, b.store.Pool, townID, "after the replay rolled back"))

	// (Deleting an agent's bead takes its pending events: TestDeletingAnAgentRemovesItsPendingEvents.)
	b.append(t, townID, nudgeDelivered())
	require.NoError(t, b.store.DeleteTown(ctx, townID))
	var left int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM pending_events WHERE town_id = $1`, townID).Scan(&left))
	require.Zero(t, left, "the town's delete takes its pending_events rows")
}

// Marking drained events processed updates their rows in place (HOT): no indexed column
// changes and town_events keeps room on its pages (fillfactor 50). Checked with the
// transaction's own statistics, before its commit.
func TestMarkingEventsProcessedIsAHOTUpdate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	const n = 40
	evs := make([]db.NewEvent, n)
	for i := range evs {
		evs[i] = nudgeDelivered()
	}
	_, err := b.store.AppendEvents(ctx, b.store.Pool, townID, evs)
	require.NoError(t, err)

	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	// The counters also hold what this connection did before and has not reported yet:
	// the drain's are the difference.
	counts := func() (updated, hot int) {
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_updated('town_events'::regclass),
       pg_stat_get_xact_tuples_hot_updated('town_events'::regclass)`).Scan(&updated, &hot))
		return updated, hot
	}
	u0, h0 := counts()
	dr, err := tt.DrainEvents(ctx, db.DrainOptions{MaxEvents: 100, MaxAttempts: 3})
	require.NoError(t, err)
	require.Equal(t, n, dr.Applied)
	u1, h1 := counts()
	require.Equal(t, n, u1-u0, "the drain marks each event once")
	require.Equal(t, n, h1-h0, "every mark is a HOT update")
	require.Empty(t, requirePendingListed(t, b, tx, townID, "after the marks"))
	require.NoError(t, tx.Commit(ctx))
}
