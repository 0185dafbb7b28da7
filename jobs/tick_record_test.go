package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// TestTicksRecordWhatAReplayNeeds: a tick that applied events, emitted actions or failed
// an event records its failed events, its actions and the hash of the state it left (the
// hash a fresh read of the town gives after commit); a tick that did nothing records
// nothing.
func TestTicksRecordWhatAReplayNeeds(t *testing.T) {
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})

	type recorded struct {
		failedSeqs []int64
		actions    []reconciler.EncodedAction
		hash       int64
	}
	record := func(tickID int64) (recorded, bool) {
		var r recorded
		var raw []byte
		err := s.store.Pool.QueryRow(ctx, `SELECT failed_seqs, actions, state_hash FROM tick_inputs
			WHERE town_id = $1 AND tick_id = $2`, s.townID, tickID).Scan(&r.failedSeqs, &raw, &r.hash)
		if errors.Is(err, pgx.ErrNoRows) {
			return r, false
		}
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &r.actions))
		return r, true
	}
	freshHash := func() uint64 {
		tx, err := s.store.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		tt, err := s.store.LockTown(ctx, tx, s.townID, s.clk.now(), true, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		snap, err := tt.LoadState(ctx)
		require.NoError(t, err)
		return reconciler.StateHash(snap)
	}
	check := func(res TickResult) recorded {
		t.Helper()
		r, ok := record(res.TickID)
		require.True(t, ok, "tick %d left no record", res.TickID)
		want, err := reconciler.EncodeActions(res.Actions)
		require.NoError(t, err)
		require.Len(t, r.actions, len(want))
		for i := range want {
			require.Equal(t, want[i].Type, r.actions[i].Type)
			require.JSONEq(t, string(want[i].Fields), string(r.actions[i].Fields))
		}
		require.Equal(t, int64(res.StateHash), r.hash)
		require.Equal(t, res.StateHash, freshHash(), "the recorded hash is the state's after commit")
		return r
	}

	// Events applied, actions emitted (a dispatch).
	s.issue(t)
	res := s.tick(t)
	require.NotEmpty(t, res.Actions)
	before := check(res)

	// An event that fails (and stays pending for a retry) is recorded as failed.
	s.svc.Ticker.failEvent = func(e db.Event) error {
		if e.Type == string(reconciler.EventBeadCreated) {
			return errors.New("injected failure")
		}
		return nil
	}
	s.issue(t)
	res = s.tick(t)
	require.Equal(t, 1, res.Drain.Failed)
	r := check(res)
	require.Equal(t, []int64{res.Drain.Failures[0].Event.Seq}, r.failedSeqs)
	s.svc.Ticker.failEvent = nil

	// The retry applies it: new state, new hash.
	res = s.tick(t)
	require.Equal(t, 1, res.Drain.Applied)
	after := check(res)
	require.NotEqual(t, before.hash, after.hash)
	require.Empty(t, after.failedSeqs)

	// Nothing to do: no record, and the state is the last record's.
	for {
		res = s.tick(t)
		if len(res.Actions) == 0 && res.Drain.Drained == 0 && !res.StateChanged {
			break
		}
		check(res)
	}
	_, ok := record(res.TickID)
	require.False(t, ok, "an idle tick records nothing")
	var last int64
	require.NoError(t, s.store.Pool.QueryRow(ctx, `SELECT state_hash FROM tick_inputs WHERE town_id = $1 ORDER BY tick_id DESC LIMIT 1`, s.townID).Scan(&last))
	require.Equal(t, int64(freshHash()), last)
}
