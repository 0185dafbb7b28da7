package db_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type testBundle struct {
	store *db.Store
	now   time.Time
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	return &testBundle{store: dbtest.NewStore(t), now: testNow()}
}

// testNow is where a test's tick clock starts: the wall clock to the second. Rows carry
// the database's clock (created_at of events), and what compares the two — pruning, the
// breaker's window — only behaves as in production when the tick clock starts there too
// (a fixed date turned into a time bomb once the wall clock passed it by a day).
func testNow() time.Time { return time.Now().UTC().Truncate(time.Second) }

// town creates a town with one rig and returns their ids.
func (b *testBundle) town(t *testing.T) (townID, rigID string) {
	t.Helper()
	ctx := context.Background()
	town, err := b.store.CreateTown(ctx, db.NewID(), "t", reconciler.TownConfig{}, b.now)
	require.NoError(t, err)
	rigID = db.NewID()
	b.append(t, town.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rigID, Name: "r", DefaultBranch: "trunk"}})
	b.tick(t, town.ID, nil)
	return town.ID, rigID
}

func (b *testBundle) append(t *testing.T, townID string, evs ...db.NewEvent) []db.AppendedEvent {
	t.Helper()
	out := make([]db.AppendedEvent, 0, len(evs))
	for _, ev := range evs {
		a, err := b.store.AppendEvent(context.Background(), b.store.Pool, townID, ev)
		require.NoError(t, err)
		out = append(out, a)
	}
	return out
}

func (b *testBundle) issue(t *testing.T, townID, rigID, title string) string {
	t.Helper()
	id := db.NewID()
	b.append(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: id, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadIssue, Title: title, RigID: rigID}})
	return id
}

// tick drains, then applies the given actions, in one committed transaction.
func (b *testBundle) tick(t *testing.T, townID string, actions []reconciler.Action, opts ...db.DrainOptions) (db.DrainResult, db.ApplyResult, *db.TownTx) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	o := db.DrainOptions{MaxEvents: 100, MaxAttempts: 3}
	if len(opts) > 0 {
		o = opts[0]
	}
	dr, err := tt.DrainEvents(ctx, o)
	require.NoError(t, err)
	ar, err := tt.ApplyActions(ctx, actions)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	return dr, ar, tt
}

// A replay drains only the recorded tick's events: others pending (committed by the live
// system meanwhile) stay pending, untouched.
func TestDrainOnlyTakesTheNamedEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	b.issue(t, townID, rigID, "named")
	other := b.issue(t, townID, rigID, "appended meanwhile")
	named := b.append(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(),
		Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: "named too", RigID: rigID}})
	pending, err := b.store.ListEvents(context.Background(), townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pending, 3)
	var only []int64
	for _, e := range pending {
		if e.BeadID != other {
			only = append(only, e.Seq)
		}
	}
	require.Contains(t, only, named[0].Seq)
	dr, _, _ := b.tick(t, townID, nil, db.DrainOptions{MaxEvents: 100, MaxAttempts: 3, Only: only})
	require.Equal(t, 2, dr.Applied)
	left, err := b.store.ListEvents(context.Background(), townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, left, 1)
	require.Equal(t, other, left[0].BeadID, "the event not named stays pending")
}

func TestDrainAppliesEventsOnceInSequenceOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	ids := []string{b.issue(t, townID, rigID, "one"), b.issue(t, townID, rigID, "two"), b.issue(t, townID, rigID, "three")}

	dr, _, _ := b.tick(t, townID, nil)
	require.Equal(t, 3, dr.Drained)
	require.Equal(t, 3, dr.Applied)
	// Applied in sequence order: creation times tie (one tick clock), the feed's ids don't.
	evs, err := b.store.ListEvents(ctx, townID, "", 10)
	require.NoError(t, err)
	for _, e := range evs {
		require.Equal(t, "processed", e.State)
		require.EqualValues(t, 1, e.Attempts, "applied exactly once")
	}
	for _, id := range ids {
		_, err := b.store.GetBead(ctx, townID, id)
		require.NoError(t, err)
	}
	// A second tick finds nothing to drain.
	dr, _, _ = b.tick(t, townID, nil)
	require.Zero(t, dr.Drained)
}

func TestDrainOrderMattersAndIsSequence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "blocked by a later bead")
	// The second event depends on the first: only sequence order makes it apply.
	blocked := db.NewID()
	b.append(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: blocked, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadIssue, Title: "needs issue", RigID: rigID, BlockedBy: []string{issue}}})
	dr, _, _ := b.tick(t, townID, nil)
	require.Equal(t, 2, dr.Applied)
	require.Zero(t, dr.Failed)
}

func TestDrainBatchBound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	for range 5 {
		b.issue(t, townID, rigID, "x")
	}
	dr, _, _ := b.tick(t, townID, nil, db.DrainOptions{MaxEvents: 3, MaxAttempts: 3})
	require.Equal(t, 3, dr.Drained)
	require.True(t, dr.More)
	dr, _, _ = b.tick(t, townID, nil, db.DrainOptions{MaxEvents: 3, MaxAttempts: 3})
	require.Equal(t, 2, dr.Drained)
	require.False(t, dr.More)
}

func TestPoisonEventGoesDeadWithoutBlockingTheTown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	poison := b.issue(t, townID, rigID, "poison")
	fail := func(ev db.Event) error {
		if ev.BeadID == poison {
			return errors.New("injected fault")
		}
		return nil
	}
	opts := db.DrainOptions{MaxEvents: 100, MaxAttempts: 3, FailEvent: fail}
	for attempt := 1; attempt <= 3; attempt++ {
		good := b.issue(t, townID, rigID, "good")
		dr, _, _ := b.tick(t, townID, nil, opts)
		_, err := b.store.GetBead(ctx, townID, good)
		require.NoError(t, err, "events behind the poison one still apply")
		if attempt < 3 {
			require.Equal(t, 1, dr.Failed)
			pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
			require.NoError(t, err)
			require.Len(t, pending, 1)
			require.EqualValues(t, attempt, pending[0].Attempts)
			require.Equal(t, "injected fault", pending[0].LastError)
		} else {
			require.Equal(t, 1, dr.Dead)
		}
	}
	dead, err := b.store.ListEvents(ctx, townID, "dead", 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Equal(t, poison, dead[0].BeadID)
	_, err = b.store.GetBead(ctx, townID, poison)
	require.ErrorIs(t, err, db.ErrNotFound, "a failed apply leaves no trace")
	has, err := b.store.HasPendingEvents(ctx, townID)
	require.NoError(t, err)
	require.False(t, has)
}

// A handler that panics fails its event like an error does: the event goes dead at the
// bound, the events behind it apply, and no tick of the town fails for it.
func TestPanickingEventGoesDeadWithoutBlockingTheTown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	poison := b.issue(t, townID, rigID, "poison")
	opts := db.DrainOptions{MaxEvents: 100, MaxAttempts: 3, FailEvent: func(ev db.Event) error {
		if ev.BeadID == poison {
			panic("handler bug")
		}
		return nil
	}}
	for attempt := 1; attempt <= 3; attempt++ {
		good := b.issue(t, townID, rigID, "good")
		dr, _, _ := b.tick(t, townID, nil, opts) // the tick itself does not fail
		_, err := b.store.GetBead(ctx, townID, good)
		require.NoError(t, err, "events behind the panicking one still apply")
		if attempt == 3 {
			require.Equal(t, 1, dr.Dead)
		}
	}
	dead, err := b.store.ListEvents(ctx, townID, "dead", 10)
	require.NoError(t, err)
	require.Len(t, dead, 1)
	require.Contains(t, dead[0].LastError, "panic: handler bug")
}

// A batch applies in one savepoint; when an event in its middle fails, the events before it
// are rolled back with it and applied again one by one — exactly once in the end.
func TestFailingEventInsideABatchAppliesTheOthersOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	first := b.issue(t, townID, rigID, "first")
	poison := b.issue(t, townID, rigID, "poison")
	last := b.issue(t, townID, rigID, "last")
	fail := func(ev db.Event) error {
		if ev.BeadID == poison {
			return errors.New("injected fault")
		}
		return nil
	}
	dr, _, _ := b.tick(t, townID, nil, db.DrainOptions{MaxEvents: 100, MaxAttempts: 3, FailEvent: fail})
	require.Equal(t, 3, dr.Drained)
	require.Equal(t, 2, dr.Applied)
	require.Equal(t, 1, dr.Failed)
	for _, id := range []string{first, last} {
		_, err := b.store.GetBead(ctx, townID, id)
		require.NoError(t, err)
		var created int
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM bead_events WHERE town_id = $1 AND bead_id = $2 AND event_type = 'created'`, townID, id).Scan(&created))
		require.Equal(t, 1, created, "applied once")
	}
	_, err := b.store.GetBead(ctx, townID, poison)
	require.ErrorIs(t, err, db.ErrNotFound)
	processed, err := b.store.ListEvents(ctx, townID, "processed", 10)
	require.NoError(t, err)
	require.Len(t, processed, 3, "the rig and the two good issues")
}

func TestMissingEntityEventsAreMarkedProcessed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, _ := b.town(t)
	b.append(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: db.NewID(), Payload: reconciler.AgentDonePayload{Branch: "b"}})
	dr, _, _ := b.tick(t, townID, nil)
	require.Equal(t, 1, dr.Applied)
	require.Zero(t, dr.Failed)
	evs, err := b.store.ListEvents(ctx, townID, "processed", 10)
	require.NoError(t, err)
	require.Len(t, evs, 2) // rig_created and the orphan agent_done
}

func TestIdempotencyKeyAppendsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, _ := b.town(t)
	ev := db.NewEvent{Type: reconciler.EventAgentDispatchFailed, AgentID: db.NewID(), IdempotencyKey: "start_agent:42"}
	first := b.append(t, townID, ev)[0]
	second := b.append(t, townID, ev)[0]
	require.False(t, first.Duplicate)
	require.True(t, second.Duplicate)
	evs, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
}

// Several events append in one round trip, in order, with the same idempotency and
// missing-town answers as one at a time.
func TestAppendEventsInOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, _ := b.town(t)
	dup := db.NewEvent{Type: reconciler.EventAgentDispatchFailed, AgentID: db.NewID(), IdempotencyKey: "start_agent:7"}
	b.append(t, townID, dup)
	evs := []db.NewEvent{
		{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}},
		dup,
		{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}},
	}
	out, err := b.store.AppendEvents(ctx, b.store.Pool, townID, evs)
	require.NoError(t, err)
	require.Len(t, out, 3)
	require.False(t, out[0].Duplicate)
	require.True(t, out[1].Duplicate)
	require.Less(t, out[0].Seq, out[2].Seq, "in order")
	pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pending, 3, "the first duplicate and the two new ones")

	_, err = b.store.AppendEvents(ctx, b.store.Pool, db.NewID(), evs)
	require.ErrorIs(t, err, db.ErrTownNotFound)
}

// An append of several events is one statement: the events keep their order (ascending
// seqs, drained in that order), a key repeated within the call appends once, empty ids
// are NULL, and an event id given in another spelling of the same uuid is recognised.
func TestAppendEventsIsOneStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, _ := b.town(t)
	agent, given := db.NewID(), strings.ToUpper(db.NewID())
	evs := []db.NewEvent{
		{Type: reconciler.EventAgentDispatchFailed, AgentID: agent, IdempotencyKey: "k"},
		{ID: given, Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}},
		{Type: reconciler.EventAgentDispatchFailed, AgentID: agent, IdempotencyKey: "k"}, // the first's key
		{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}},
	}
	tracer.Take()
	out, err := b.store.AppendEvents(ctx, b.store.Pool, townID, evs)
	require.NoError(t, err)
	require.Len(t, named(tracer.Take(), "EventInsertMany"), 1)
	require.Equal(t, []bool{false, false, true, false}, []bool{out[0].Duplicate, out[1].Duplicate, out[2].Duplicate, out[3].Duplicate})
	require.Less(t, out[0].Seq, out[1].Seq)
	require.Less(t, out[1].Seq, out[3].Seq)
	require.Equal(t, given, out[1].ID)

	pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pending, 3)
	var nulls int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE town_id = $1 AND seq = ANY($2)
		AND bead_id IS NULL AND idempotency_key IS NULL AND agent_id IS NULL`, townID, []int64{out[1].Seq, out[3].Seq}).Scan(&nulls))
	require.Equal(t, 2, nulls, "empty ids and keys are NULL")
	var agentOf string
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT agent_id FROM town_events WHERE town_id = $1 AND seq = $2`, townID, out[0].Seq).Scan(&agentOf))
	require.Equal(t, agent, agentOf)
}

func TestDispatchCreatesPolecatFromPoolAndDoneSubmitsMR(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "work")
	_, ar, tt := b.tick(t, townID, []reconciler.Action{reconciler.DispatchAgent{BeadID: issue, RigID: rigID}})
	require.Equal(t, 1, ar.Applied)
	require.Len(t, tt.SideEffects(), 1)
	start := tt.SideEffects()[0].(db.StartAgent)

	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	require.Len(t, agents, 1)
	p := agents[0]
	require.Equal(t, "Toast", p.Name)
	require.Equal(t, reconciler.AgentWorking, p.Status)
	require.Equal(t, issue, p.HookBeadID)
	require.Equal(t, p.ID, start.AgentID)
	bead, err := b.store.GetBead(ctx, townID, issue)
	require.NoError(t, err)
	require.Equal(t, reconciler.StatusInProgress, bead.Status)
	require.Equal(t, p.ID, bead.AssigneeID)
	require.Equal(t, 1, bead.DispatchAttempts)

	b.append(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p.ID, Payload: reconciler.AgentDonePayload{Branch: "gt/toast/x"}})
	b.tick(t, townID, nil)
	bead, err = b.store.GetBead(ctx, townID, issue)
	require.NoError(t, err)
	require.Equal(t, reconciler.StatusInReview, bead.Status)
	require.Equal(t, p.ID, bead.AssigneeID, "the assignee stays after done")
	mrs, err := b.store.ListBeads(ctx, townID, db.BeadFilter{Type: reconciler.BeadMergeRequest, Limit: 10})
	require.NoError(t, err)
	require.Len(t, mrs, 1)
	require.Equal(t, reconciler.StatusOpen, mrs[0].Status)
	require.Equal(t, "Review: gt/toast/x", mrs[0].Title)
	require.Equal(t, issue, mrs[0].MetaString("source_bead_id"))
	p, err = b.store.GetAgent(ctx, townID, p.ID)
	require.NoError(t, err)
	require.Equal(t, reconciler.AgentIdle, p.Status)
	require.Empty(t, p.HookBeadID)
}

func TestStaleActionsAreSkippedAndCounted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "work")
	b.tick(t, townID, nil)
	_, ar, _ := b.tick(t, townID, []reconciler.Action{
		reconciler.TransitionBead{BeadID: issue, From: reconciler.StatusOpen, To: reconciler.StatusFailed, Reason: "x", Actor: "system"},
		// Derived from the same snapshot, now stale: the bead is failed, not open.
		reconciler.DispatchAgent{BeadID: issue, RigID: rigID},
		reconciler.TransitionBead{BeadID: issue, From: reconciler.StatusOpen, To: reconciler.StatusInProgress, Reason: "y", Actor: "system"},
	})
	require.Equal(t, 1, ar.Applied)
	require.Equal(t, 2, ar.Skipped)
	bead, err := b.store.GetBead(ctx, townID, issue)
	require.NoError(t, err)
	require.Equal(t, reconciler.StatusFailed, bead.Status)
	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	require.Empty(t, agents, "the skipped dispatch created no agent")
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townA, rigA := b.town(t)
	townB, _ := b.town(t)
	issue := b.issue(t, townA, rigA, "a's work")
	b.tick(t, townA, nil)

	_, err := b.store.GetBead(ctx, townB, issue)
	require.ErrorIs(t, err, db.ErrNotFound, "town B cannot read A's bead")
	_, err = b.store.GetRig(ctx, townB, rigA)
	require.ErrorIs(t, err, db.ErrNotFound)
	beadsB, err := b.store.ListBeads(ctx, townB, db.BeadFilter{Limit: 100})
	require.NoError(t, err)
	require.Empty(t, beadsB)
	// An action of B's tick naming A's bead finds nothing and changes nothing.
	_, ar, _ := b.tick(t, townB, []reconciler.Action{reconciler.TransitionBead{BeadID: issue, To: reconciler.StatusFailed, Reason: "x"}})
	require.Equal(t, 1, ar.Skipped)
	bead, err := b.store.GetBead(ctx, townA, issue)
	require.NoError(t, err)
	require.Equal(t, reconciler.StatusOpen, bead.Status)
	// B's events are B's.
	evsB, err := b.store.ListEvents(ctx, townB, "", 100)
	require.NoError(t, err)
	for _, e := range evsB {
		require.NotEqual(t, issue, e.BeadID)
	}
}

func TestHeartbeatsAreRecordedTickInputsAppliedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "work")
	_, _, _ = b.tick(t, townID, []reconciler.Action{reconciler.DispatchAgent{BeadID: issue, RigID: rigID}})
	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	agentID := agents[0].ID
	// The agent went idle (heartbeat lost) while keeping its hook; attempts count 1.
	b.tick(t, townID, []reconciler.Action{reconciler.TransitionAgent{AgentID: agentID, From: reconciler.AgentWorking, To: reconciler.AgentIdle}})

	at := b.now.Add(30 * time.Second)
	require.NoError(t, b.store.RecordHeartbeat(ctx, townID, agentID, db.Heartbeat{
		LastEventType: "tool_call", LastEventAt: at, ActiveTools: []string{"bash"},
	}))
	agent, err := b.store.GetAgent(ctx, townID, agentID)
	require.NoError(t, err)
	require.Equal(t, reconciler.AgentIdle, agent.Status, "a heartbeat changes nothing until a tick takes it")

	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	inputs, err := tt.ApplyHeartbeats(ctx)
	require.NoError(t, err)
	require.Len(t, inputs, 1)
	require.Equal(t, agentID, inputs[0].AgentID)
	require.Equal(t, []string{"bash"}, inputs[0].ActiveTools)
	require.NoError(t, tt.Finish(ctx, db.TickRecord{Heartbeats: inputs, NextTickAt: b.now}))
	require.NoError(t, tx.Commit(ctx))

	agent, err = b.store.GetAgent(ctx, townID, agentID)
	require.NoError(t, err)
	require.Equal(t, reconciler.AgentWorking, agent.Status, "touchAgent: idle → working (proof of life)")
	require.Zero(t, agent.DispatchAttempts, "touchAgent resets attempts")
	require.Equal(t, "tool_call", agent.LastEventType)
	require.True(t, agent.LastEventAt.Equal(at))
	require.Equal(t, []string{"bash"}, agent.ActiveTools)
	require.False(t, agent.LastActivityAt.IsZero())

	var recorded int
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT jsonb_array_length(heartbeats) FROM tick_inputs WHERE town_id = $1 AND tick_id = $2",
		townID, tt.TickID).Scan(&recorded))
	require.Equal(t, 1, recorded, "the tick recorded the heartbeat it took")

	// The next tick takes nothing: a heartbeat is applied once.
	tx, err = b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	tt, err = b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	inputs, err = tt.ApplyHeartbeats(ctx)
	require.NoError(t, err)
	require.Empty(t, inputs)
}
