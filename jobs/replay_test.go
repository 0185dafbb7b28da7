package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// randomHistory drives a town through a seeded random history: issues created in
// bursts, agents starting, heartbeating (or not), finishing or failing to start, events
// that fail once, the clock jumping; a tick after each step. It returns the tick id of a
// checkpoint taken on demand halfway.
func randomHistory(t *testing.T, s *scenario, steps int) (midCheckpoint int64) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 9))
	failing := map[int64]bool{} // events that fail their first apply
	s.svc.Ticker.failEvent = func(e db.Event) error {
		if failing[e.Seq] && e.Attempts == 0 {
			return errors.New("injected failure")
		}
		return nil
	}
	for step := range steps {
		switch rng.IntN(7) {
		case 0, 1:
			for range 1 + rng.IntN(3) {
				s.issue(t)
			}
		case 2: // an agent's start succeeded or failed
			for _, a := range s.agents(t) {
				if a.HookBeadID != "" && rng.IntN(2) == 0 {
					ev := db.NewEvent{Type: reconciler.EventAgentDispatched, AgentID: a.ID, Payload: reconciler.AgentDispatchedPayload{BeadID: a.HookBeadID}}
					if rng.IntN(4) == 0 {
						ev.Type, ev.Payload = reconciler.EventAgentDispatchFailed, reconciler.AgentDispatchedPayload{BeadID: a.HookBeadID, Error: "container refused"}
					}
					s.append(t, ev)
				}
			}
		case 3: // working agents heartbeat
			for _, a := range s.agents(t) {
				if a.Status == reconciler.AgentWorking {
					require.NoError(t, s.store.RecordHeartbeat(ctx, s.townID, a.ID, db.Heartbeat{
						LastEventType: "tool", LastEventAt: s.clk.now(), ActiveTools: []string{"bash"}[:rng.IntN(2)]}))
				}
			}
		case 4: // an agent finishes
			for _, a := range s.agents(t) {
				if a.Status == reconciler.AgentWorking && a.HookBeadID != "" {
					s.append(t, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: a.ID, Payload: reconciler.AgentDonePayload{Branch: "gt/" + a.Name}})
					break
				}
			}
		case 5: // the next event fails once
			var seq int64
			require.NoError(t, s.store.Pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) + 1 FROM town_events`).Scan(&seq))
			failing[seq] = true
			s.issue(t)
		case 6:
			s.clk.add(time.Duration(1+rng.IntN(90)) * time.Second)
		}
		s.clk.add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		s.tick(t)
		if step == steps/2 {
			cp, err := s.store.CheckpointNow(ctx, s.townID, s.clk.now())
			require.NoError(t, err)
			midCheckpoint = cp.TickID
		}
	}
	s.svc.Ticker.failEvent = nil
	return midCheckpoint
}

// townFingerprint is what a replay must leave as it found it: the state's hash and the
// inputs' and records' rows.
func townFingerprint(t *testing.T, s *scenario) []any {
	t.Helper()
	ctx := context.Background()
	tx, err := s.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	hash, err := s.store.StateHashOn(ctx, tx, s.townID)
	require.NoError(t, err)
	var events, pending, records, checkpoints, ticks int
	require.NoError(t, tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM town_events WHERE town_id = $1),
		(SELECT count(*) FROM town_events WHERE town_id = $1 AND state = 'pending'),
		(SELECT count(*) FROM tick_inputs WHERE town_id = $1), (SELECT count(*) FROM town_checkpoints WHERE town_id = $1),
		(SELECT tick_count FROM towns WHERE town_id = $1)`, s.townID).Scan(&events, &pending, &records, &checkpoints, &ticks))
	return []any{hash, events, pending, records, checkpoints, ticks}
}

func TestFaithfulReplayReproducesARandomHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})
	mid := randomHistory(t, s, 80)
	before := townFingerprint(t, s)

	whole, err := s.svc.Replay(ctx, s.townID, ReplayOptions{})
	require.NoError(t, err)
	require.Zero(t, whole.CheckpointTick, "the whole history starts at the town's creation")
	require.True(t, whole.CheckpointValid)
	require.Greater(t, whole.TicksReplayed, 30)
	if d := whole.FirstDivergence; d != nil {
		t.Fatalf("tick %d did not reproduce:\n%s", d.TickID, d.Diff)
	}
	require.True(t, whole.Reproduced)
	require.Len(t, whole.Ticks, whole.TicksReplayed)
	var failed, heartbeats bool
	for _, tr := range whole.Ticks {
		require.True(t, tr.Reproduced())
	}
	require.NoError(t, s.store.Pool.QueryRow(ctx, `SELECT bool_or(cardinality(failed_seqs) > 0), bool_or(jsonb_array_length(heartbeats) > 0)
		FROM tick_inputs WHERE town_id = $1`, s.townID).Scan(&failed, &heartbeats))
	require.True(t, failed && heartbeats, "the history had failed events and heartbeats to replay")
	require.Equal(t, before, townFingerprint(t, s), "a replay leaves the database as it found it")
	require.Equal(t, hashString(before[0].(uint64)), whole.Ticks[len(whole.Ticks)-1].ReplayedHash, "the replay ends in the live state")

	// From the checkpoint taken halfway: the same ticks, the same outcome.
	require.Positive(t, mid)
	later, err := s.svc.Replay(ctx, s.townID, ReplayOptions{From: mid + 1})
	require.NoError(t, err)
	require.Equal(t, mid, later.CheckpointTick)
	require.True(t, later.CheckpointValid)
	require.True(t, later.Reproduced)
	fromStart, err := s.svc.Replay(ctx, s.townID, ReplayOptions{From: mid + 1, To: whole.To, FromFirstCheckpoint: true})
	require.NoError(t, err)
	require.Zero(t, fromStart.CheckpointTick, "no checkpoint between the first and the window's start is needed")
	require.Equal(t, fromStart.Ticks, later.Ticks, "across a checkpoint boundary, replay equals replay from an earlier checkpoint")
	require.Equal(t, before, townFingerprint(t, s))
}

func TestFaithfulReplayPointsAtAChangedRule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})
	randomHistory(t, s, 40)
	// The changed rule: only the first issue ever dispatched is dispatched. The first
	// recorded tick that dispatched another issue is where the history must diverge.
	var first string
	changed := func(snap *reconciler.Snapshot, o reconciler.Options, now time.Time) []reconciler.Action {
		out := reconciler.Reconcile(snap, o, now)
		return slices.DeleteFunc(out, func(a reconciler.Action) bool {
			d, ok := a.(reconciler.DispatchAgent)
			if !ok {
				return false
			}
			if first == "" {
				first = d.BeadID
			}
			return d.BeadID != first
		})
	}
	var want int64
	rows, err := s.store.Pool.Query(ctx, `SELECT tick_id, actions FROM tick_inputs WHERE town_id = $1 ORDER BY tick_id`, s.townID)
	require.NoError(t, err)
	var firstSeen string
	for rows.Next() && want == 0 {
		var id int64
		var actions []reconciler.EncodedAction
		require.NoError(t, rows.Scan(&id, &actions))
		for _, a := range actions {
			if a.Type != reconciler.ActDispatchAgent {
				continue
			}
			var d reconciler.DispatchAgent
			require.NoError(t, json.Unmarshal(a.Fields, &d))
			if firstSeen == "" {
				firstSeen = d.BeadID
			}
			if d.BeadID != firstSeen {
				want = id
			}
		}
	}
	rows.Close()
	require.NoError(t, rows.Err())
	require.Positive(t, want, "the history dispatched more than one issue")

	rep, err := s.svc.Replay(ctx, s.townID, ReplayOptions{Reconcile: changed, StopAtDivergence: true})
	require.NoError(t, err)
	require.False(t, rep.Reproduced)
	require.NotNil(t, rep.FirstDivergence)
	require.Equal(t, want, rep.FirstDivergence.TickID, "diverges at the first tick the change affects")
	require.False(t, rep.FirstDivergence.ActionsMatch)
	require.Contains(t, rep.FirstDivergence.Diff, "- recorded: dispatch_agent")
	require.Equal(t, rep.FirstDivergence.TickID, rep.Ticks[len(rep.Ticks)-1].TickID, "stopped at the divergence")
}

func TestWhatIfReplayShowsHowActionsWouldDiffer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})
	issue, p := s.dispatched(t)
	s.append(t, db.NewEvent{Type: reconciler.EventAgentDispatchFailed, AgentID: p,
		Payload: reconciler.AgentDispatchedPayload{BeadID: issue, Error: "container refused"}})
	// The agent is lost (no heartbeat), its issue reopens and, after the backoff, is
	// dispatched again: the second of five attempts.
	var res TickResult
	for range 10 {
		s.clk.add(time.Minute)
		if res = s.tick(t); countType[reconciler.DispatchAgent](res.Actions) > 0 {
			break
		}
	}
	require.Equal(t, 1, countType[reconciler.DispatchAgent](res.Actions), "retried")

	one := 1
	rep, err := s.svc.Replay(ctx, s.townID, ReplayOptions{Config: &reconciler.TownConfig{MaxDispatchAttempts: &one}})
	require.NoError(t, err)
	require.Equal(t, "what-if", rep.Mode)
	require.False(t, rep.Reproduced)
	d := rep.FirstDivergence
	require.NotNil(t, d)
	require.Equal(t, res.TickID, d.TickID, "with one attempt allowed, the retry is where the history changes")
	require.Contains(t, d.Diff, "- recorded: dispatch_agent", d.Diff)
	require.Contains(t, d.Diff, "+ replayed: transition_bead", d.Diff)
	require.Contains(t, d.Diff, "max dispatch attempts exceeded (1)", d.Diff)
	require.Contains(t, d.Diff, "differs in town (draining, config), beads", d.Diff)

	// The faithful replay of the same history reproduces it.
	rep, err = s.svc.Replay(ctx, s.townID, ReplayOptions{})
	require.NoError(t, err)
	require.True(t, rep.Reproduced)
}

func TestPeriodicCheckpointsAndTheirRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})
	s.svc.Ticker.cfg.CheckpointEvery, s.svc.Ticker.cfg.CheckpointInterval = 5, 1000*time.Hour
	randomHistory(t, s, 40)

	var records, checkpoints, mismatched int
	require.NoError(t, s.store.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM tick_inputs WHERE town_id = $1),
		(SELECT count(*) FROM town_checkpoints WHERE town_id = $1),
		(SELECT count(*) FROM town_checkpoints c JOIN tick_inputs i USING (town_id, tick_id)
		 WHERE c.town_id = $1 AND c.state_hash <> i.state_hash)`, s.townID).Scan(&records, &checkpoints, &mismatched))
	require.GreaterOrEqual(t, checkpoints, 1+records/5-2, "a checkpoint about every 5 records (%d records)", records)
	require.Zero(t, mismatched, "a tick's checkpoint holds the state its record hashes")
	cps, err := s.store.ListCheckpoints(ctx, s.townID)
	require.NoError(t, err)
	mid := cps[len(cps)/2].TickID
	rep, err := s.svc.Replay(ctx, s.townID, ReplayOptions{From: mid + 1})
	require.NoError(t, err)
	require.Equal(t, mid, rep.CheckpointTick)
	require.True(t, rep.CheckpointValid)
	require.True(t, rep.Reproduced)

	// Eight days later the events, records and checkpoints of the first week are pruned,
	// all but the latest checkpoint; the retained history still replays.
	s.clk.add(8 * 24 * time.Hour)
	s.issue(t)
	s.tick(t)
	s.tick(t)
	cps, err = s.store.ListCheckpoints(ctx, s.townID)
	require.NoError(t, err)
	require.NotEmpty(t, cps)
	for _, cp := range cps {
		require.Greater(t, cp.TakenAt, s.clk.now().Add(-7*24*time.Hour), "old checkpoints pruned, a new one taken")
	}
	var oldRecords int
	require.NoError(t, s.store.Pool.QueryRow(ctx, `SELECT count(*) FROM tick_inputs WHERE town_id = $1 AND clock_at < $2`,
		s.townID, s.clk.now().Add(-7*24*time.Hour)).Scan(&oldRecords))
	require.Zero(t, oldRecords, "records pruned with the events")
	rep, err = s.svc.Replay(ctx, s.townID, ReplayOptions{FromFirstCheckpoint: true})
	require.NoError(t, err)
	require.True(t, rep.Reproduced)
	require.Positive(t, rep.TicksReplayed)
}

func TestReplayCanBeCancelled(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	randomHistory(t, s, 20)
	before := townFingerprint(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	var seen int
	_, err := s.svc.Replay(ctx, s.townID, ReplayOptions{Progress: func(done, total int) {
		seen = done
		require.Greater(t, total, 2)
		cancel()
	}})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 1, seen, "stopped after the tick in flight")
	require.Equal(t, before, townFingerprint(t, s))
}

// A replay of a live town: facts keep arriving while it re-runs the history (the replay
// holds the town, appends do not wait for it). Events committed between re-run ticks are
// not taken by the next one and the history still reproduces. (One committed between a
// tick's ReplayPending and its drain is left out by DrainOptions.Only:
// db/TestDrainOnlyTakesTheNamedEvents.)
func TestReplayIgnoresEventsAppendedWhileItRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newScenario(t, reconciler.TownConfig{})
	randomHistory(t, s, 30)
	appended := 0
	rep, err := s.svc.Replay(ctx, s.townID, ReplayOptions{Progress: func(int, int) {
		ev := beadCreated(s.rigID, "arrived during the replay")
		_, err := s.store.AppendEvent(ctx, s.store.Pool, s.townID, ev)
		require.NoError(t, err)
		appended++
	}})
	require.NoError(t, err)
	require.Positive(t, appended)
	if d := rep.FirstDivergence; d != nil {
		t.Fatalf("tick %d did not reproduce with events arriving:\n%s", d.TickID, d.Diff)
	}
	require.True(t, rep.Reproduced)
}
