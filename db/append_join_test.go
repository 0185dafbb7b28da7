package db_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// TestAppendJoinsTheTownsTick covers both forms of AppendEventsJoinTick — one event (one
// statement) and several (a pipeline) — against the town's tick jobs: none, a waiting one
// (joined and share-locked), a running one; and a repeated idempotency key.
func TestAppendJoinsTheTownsTick(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	other, _ := b.town(t)
	nudge := func(key string) db.NewEvent {
		return db.NewEvent{Type: reconciler.EventNudgeDelivered, IdempotencyKey: key, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
	}
	appendIn := func(evs ...db.NewEvent) ([]db.AppendedEvent, db.TickState, bool) {
		t.Helper()
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		out, st, err := b.store.AppendEventsJoinTick(ctx, tx, townID, evs)
		require.NoError(t, err)
		// A waiting job we joined is share-locked by us: another transaction's FOR UPDATE
		// SKIP LOCKED (River's fetch) passes it by.
		var fetchable int
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM river_job
			WHERE kind = 'tick_town' AND state = 'available' AND args ->> 'town_id' = $1 FOR UPDATE SKIP LOCKED) j`, townID).Scan(&fetchable))
		require.NoError(t, tx.Commit(ctx))
		return out, st, fetchable == 0
	}
	job := func(town, state string) int64 {
		var id int64
		require.NoError(t, b.store.Pool.QueryRow(ctx, `INSERT INTO river_job (state, args, kind, queue)
			VALUES ($2::river_job_state, jsonb_build_object('town_id', $1::text), 'tick_town', 'ticks') RETURNING id`, town, state).Scan(&id))
		return id
	}

	for _, n := range []int{1, 3} {
		evs := make([]db.NewEvent, n)
		for i := range evs {
			evs[i] = nudge("")
		}
		out, st, _ := appendIn(evs...)
		require.Len(t, out, n)
		for _, a := range out {
			require.Positive(t, a.Seq)
			require.False(t, a.Duplicate)
		}
		require.Equal(t, db.TickState{}, st, "no tick job: the caller enqueues one")
	}

	out, _, _ := appendIn(nudge("once"))
	require.False(t, out[0].Duplicate)
	out, _, _ = appendIn(nudge("once"))
	require.True(t, out[0].Duplicate, "a repeated idempotency key inserts nothing")
	require.Zero(t, out[0].Seq)

	job(other, "available") // another town's tick is not ours
	running := job(townID, "running")
	for _, n := range []int{1, 2} {
		evs := []db.NewEvent{nudge("")}
		if n == 2 {
			evs = append(evs, nudge(""))
		}
		_, st, _ := appendIn(evs...)
		require.Equal(t, db.TickState{RunningJob: running}, st, "a running tick is reported")
	}
	job(townID, "available")
	for _, n := range []int{1, 2} {
		evs := []db.NewEvent{nudge("")}
		if n == 2 {
			evs = append(evs, nudge(""))
		}
		_, st, locked := appendIn(evs...)
		require.True(t, st.Waiting, "a waiting tick is joined")
		require.True(t, locked, "and held until the append commits")
	}
}
