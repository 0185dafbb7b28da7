package db_test

import (
	"context"
	"crypto/sha256"
	"errors"
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
		out, st, err := b.store.AppendEventsJoinTick(ctx, tx, townID, evs, nil)
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

// TestAppendOnThePoolIsItsOwnTransaction: on the pool, AppendEventsJoinTick is one round
// trip that commits by itself — one statement for one event, one pipeline for several,
// and no BEGIN or COMMIT — and a pipeline of several events commits all or none of them.
func TestAppendOnThePoolIsItsOwnTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	store := b.store
	townID, _ := b.town(t)
	nudge := db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
	pending := func() int {
		t.Helper()
		var n int
		require.NoError(t, store.Pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE town_id = $1`, townID).Scan(&n))
		return n
	}

	for _, n := range []int{1, 3} {
		evs := make([]db.NewEvent, n)
		for i := range evs {
			evs[i] = nudge
			evs[i].ID = db.NewID()
		}
		before := pending()
		tracer.Take()
		out, _, err := store.AppendEventsJoinTick(ctx, store.Pool, townID, evs, nil)
		require.NoError(t, err)
		require.Len(t, out, n)
		statements := tracer.Take()
		want := 2 // the insert of them all and the look for tick jobs
		if n == 1 {
			want = 1 // one statement does both
		}
		require.Len(t, statements, want, "%d events: %v", n, statements)
		for _, sql := range statements {
			require.NotRegexp(t, `(?i)^\s*(begin|commit)`, sql)
		}
		require.Equal(t, before+n, pending(), "committed without a COMMIT")
	}

	// An append whose last event breaks a constraint commits none of its events.
	bad := db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: []int{1}} // payload must be an object
	before := pending()
	_, _, err := store.AppendEventsJoinTick(ctx, store.Pool, townID, []db.NewEvent{nudge, nudge, bad}, nil)
	require.ErrorContains(t, err, "violates check constraint")
	require.Equal(t, before, pending(), "none of the three committed")
}

// TestAppendEnqueuesATickOnlyForATownWithout: given the tick job's row, a one-event append
// inserts it when the town has neither a waiting nor a running tick — and not when it has
// one, nor when River's unique index holds the town's job in another unique state
// (scheduled: the append then reports nothing and its caller enqueues through River).
func TestAppendEnqueuesATickOnlyForATownWithout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	key := sha256.Sum256([]byte(townID))
	tick := &db.TickJob{Args: []byte(`{"town_id":"` + townID + `"}`), Kind: "tick_town", MaxAttempts: 100, Priority: 1,
		Queue: "ticks", UniqueKey: key[:], UniqueStates: 0b1111_0001} // River's bits of available, pending, retryable, running, scheduled
	appendOne := func() db.TickState {
		t.Helper()
		_, st, err := b.store.AppendEventsJoinTick(ctx, b.store.Pool, townID,
			[]db.NewEvent{{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}}, tick)
		require.NoError(t, err)
		return st
	}
	setState := func(id int64, state string) {
		t.Helper()
		_, err := b.store.Pool.Exec(ctx, `UPDATE river_job SET state = $2::river_job_state WHERE id = $1`, id, state)
		require.NoError(t, err)
	}

	st := appendOne()
	require.Positive(t, st.EnqueuedJob, "no tick: the append inserted one")
	job := st.EnqueuedJob
	require.Equal(t, db.TickState{Waiting: true}, appendOne(), "then joins it")
	setState(job, "running")
	require.Equal(t, db.TickState{RunningJob: job}, appendOne(), "a running tick is left to its re-check")
	setState(job, "scheduled")
	require.Equal(t, db.TickState{}, appendOne(), "River's unique index holds the scheduled job: nothing inserted")
	var jobs int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args ->> 'town_id' = $1`, townID).Scan(&jobs))
	require.Equal(t, 1, jobs)
}

// The re-check a tick runs after its commit (an append that found the tick running left
// its event to it) finds every event the tick did not try — also one whose seq is below
// the last the tick drained: sequence numbers are drawn at the insert, so an append that
// commits after a later one is behind it. An event the tick tried and failed waits for
// the next tick without waking the town at once.
func TestRecheckFindsAnEventCommittedBehindTheTicksLastSeq(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	nudge := db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}

	late, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer late.Rollback(ctx)                                     //nolint:errcheck
	behind, err := b.store.AppendEvent(ctx, late, townID, nudge) // its seq is drawn, not committed
	require.NoError(t, err)
	ahead := b.append(t, townID, nudge)[0]
	require.Greater(t, ahead.Seq, behind.Seq)

	dr, _, tt := b.tick(t, townID, nil)
	require.Equal(t, 1, dr.Applied, "the tick sees only the committed event")
	last := tt.LastDrainedSeq()
	require.Equal(t, ahead.Seq, last)
	more, err := b.store.HasPendingEventsAfter(ctx, townID, last)
	require.NoError(t, err)
	require.False(t, more, "nothing committed is left")

	require.NoError(t, late.Commit(ctx))
	more, err = b.store.HasPendingEventsAfter(ctx, townID, last)
	require.NoError(t, err)
	require.True(t, more, "the event committed behind the tick's last seq was never tried: the town needs a tick")

	poison := func(db.Event) error { return errors.New("poison") }
	dr, _, tt = b.tick(t, townID, nil, db.DrainOptions{MaxEvents: 100, MaxAttempts: 3, FailEvent: poison})
	require.Equal(t, 1, dr.Failed)
	more, err = b.store.HasPendingEventsAfter(ctx, townID, tt.LastDrainedSeq())
	require.NoError(t, err)
	require.False(t, more, "a failed event waits for the next tick")
	more, err = b.store.HasPendingEventsAfter(ctx, townID, 0)
	require.NoError(t, err)
	require.True(t, more, "it is still pending after seq 0")
}
