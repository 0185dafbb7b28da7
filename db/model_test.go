package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// --- helpers ---

func (b *testBundle) bead(t *testing.T, townID, id string) reconciler.Bead {
	t.Helper()
	bd, err := b.store.GetBead(context.Background(), townID, id)
	require.NoError(t, err)
	return bd
}

func (b *testBundle) agentRow(t *testing.T, townID, id string) reconciler.Agent {
	t.Helper()
	a, err := b.store.GetAgent(context.Background(), townID, id)
	require.NoError(t, err)
	return a
}

// dispatch dispatches a new polecat (or the rig's refinery, for an MR) onto a bead.
func (b *testBundle) dispatch(t *testing.T, townID, rigID, beadID string) string {
	t.Helper()
	_, ar, tt := b.tick(t, townID, []reconciler.Action{reconciler.DispatchAgent{BeadID: beadID, RigID: rigID}})
	require.Equal(t, 1, ar.Applied)
	return tt.SideEffects()[0].(db.StartAgent).AgentID
}

func (b *testBundle) event(t *testing.T, townID string, ev db.NewEvent) (db.DrainResult, *db.TownTx) {
	t.Helper()
	b.append(t, townID, ev)
	dr, _, tt := b.tick(t, townID, nil)
	require.Zero(t, dr.Failed, "%v", dr.Failures)
	return dr, tt
}

func (b *testBundle) beadsOf(t *testing.T, townID string, typ reconciler.BeadType) []reconciler.Bead {
	t.Helper()
	out, err := b.store.ListBeads(context.Background(), townID, db.BeadFilter{Type: typ, Limit: 1000})
	require.NoError(t, err)
	return out
}

// polecatInReview runs issue → dispatch → done and returns (issue, polecat, MR).
func (b *testBundle) polecatInReview(t *testing.T, townID, rigID string) (issue, polecat, mr string) {
	t.Helper()
	issue = b.issue(t, townID, rigID, "work")
	b.tick(t, townID, nil)
	polecat = b.dispatch(t, townID, rigID, issue)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: polecat, Payload: reconciler.AgentDonePayload{Branch: "gt/p/" + issue[:8]}})
	mrs := b.beadsOf(t, townID, reconciler.BeadMergeRequest)
	for _, m := range mrs {
		if m.MetaString("source_bead_id") == issue {
			return issue, polecat, m.ID
		}
	}
	t.Fatal("no MR")
	return
}

// refineryOn pops an MR to a new refinery (R5 without a refinery) and returns it.
func (b *testBundle) refineryOn(t *testing.T, townID, rigID, mr string) string {
	t.Helper()
	_, ar, tt := b.tick(t, townID, []reconciler.Action{
		reconciler.TransitionBead{BeadID: mr, From: reconciler.StatusOpen, To: reconciler.StatusInProgress, Actor: "system"},
		reconciler.DispatchAgent{BeadID: mr, RigID: rigID},
	})
	require.Equal(t, 2, ar.Applied)
	return tt.SideEffects()[0].(db.StartAgent).AgentID
}

// --- agent_done ---

func TestAgentDoneRefineryDirectMerge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	require.Equal(t, reconciler.RoleRefinery, b.agentRow(t, townID, ref).Role)
	// A second, older MR of the same source: force-closed on merge.
	b.tick(t, townID, []reconciler.Action{reconciler.CreateMRBead{SourceBeadID: issue, AgentID: "system", Branch: "other"}})

	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x"}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, mr).Status)
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, issue).Status)
	for _, m := range b.beadsOf(t, townID, reconciler.BeadMergeRequest) {
		require.Equal(t, reconciler.StatusClosed, m.Status)
	}
	r := b.agentRow(t, townID, ref)
	require.Equal(t, reconciler.AgentIdle, r.Status)
	require.Empty(t, r.HookBeadID)
}

func TestAgentDoneRefineryWithPR(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x", PRURL: "https://github.com/o/r/pull/7"}})
	m := b.bead(t, townID, mr)
	require.Equal(t, reconciler.StatusInProgress, m.Status)
	require.Equal(t, "https://github.com/o/r/pull/7", m.MetaString("pr_url"))
	require.Empty(t, b.agentRow(t, townID, ref).HookBeadID)
}

func TestAgentDoneRefineryInvalidPRFailsReview(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x", PRURL: "http://insecure/pull/1"}})
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, mr).Status)
	// The review is complete, as failed: the source goes back for rework at once.
	src := b.bead(t, townID, issue)
	require.Equal(t, reconciler.StatusOpen, src.Status, "the source goes back for rework")
	require.Empty(t, src.AssigneeID)
}

func TestAgentDoneUnhookedRefineryFailsAndEscalates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.tick(t, townID, []reconciler.Action{reconciler.UnhookAgent{AgentID: ref, Reason: "test"}})
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x"}})
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, mr).Status, "no optimistic merge")
	src := b.bead(t, townID, issue)
	require.Equal(t, reconciler.StatusOpen, src.Status, "the source goes back for rework")
	require.Empty(t, src.AssigneeID)
	esc := b.beadsOf(t, townID, reconciler.BeadEscalation)
	require.Len(t, esc, 1)
	require.Equal(t, "refinery_unhooked_done", esc[0].MetaString("kind"))
	require.Equal(t, reconciler.PriorityHigh, esc[0].Priority)
}

func TestAgentDoneOnFixupBeadClosesIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	id := db.NewID()
	b.append(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: id, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadIssue, Title: "rework", RigID: rigID, Labels: []string{reconciler.LabelRework}}})
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, id)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p, Payload: reconciler.AgentDonePayload{Branch: "x"}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, id).Status)
	require.Empty(t, b.beadsOf(t, townID, reconciler.BeadMergeRequest), "fix-ups close without review")
}

func TestAgentDoneAndCompletedInEitherOrderSubmitTheWork(t *testing.T) {
	t.Parallel()
	for _, doneFirst := range []bool{true, false} {
		b := setup(t)
		townID, rigID := b.town(t)
		issue := b.issue(t, townID, rigID, "work")
		b.tick(t, townID, nil)
		p := b.dispatch(t, townID, rigID, issue)
		done := db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p, Payload: reconciler.AgentDonePayload{Branch: "gt/x"}}
		completed := db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: p, Payload: reconciler.AgentCompletedPayload{Status: "completed"}}
		if doneFirst {
			b.append(t, townID, done, completed)
		} else {
			b.append(t, townID, completed, done)
		}
		dr, _, _ := b.tick(t, townID, nil)
		require.Equal(t, 2, dr.Applied)
		require.Equal(t, reconciler.StatusInReview, b.bead(t, townID, issue).Status, "done first: %v", doneFirst)
		require.Len(t, b.beadsOf(t, townID, reconciler.BeadMergeRequest), 1, "done first: %v", doneFirst)
		a := b.agentRow(t, townID, p)
		require.Equal(t, reconciler.AgentIdle, a.Status)
		require.Empty(t, a.HookBeadID)
	}
}

// --- agent_completed ---

func TestAgentCompletedFailedFailsTheBead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "work")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: p, Payload: reconciler.AgentCompletedPayload{Status: "boom"}})
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, issue).Status, "an unknown status counts as failed")
	a := b.agentRow(t, townID, p)
	require.Equal(t, reconciler.AgentIdle, a.Status)
	require.Empty(t, a.HookBeadID)
	require.Zero(t, a.DispatchAttempts)
}

// An exit report that names an earlier bead arrives after the agent was dispatched onto
// new work: the new run keeps its hook, its status and its bead.
func TestLateAgentCompletedOfAnEarlierRunChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	first, p, _ := b.polecatInReview(t, townID, rigID)
	second := b.issue(t, townID, rigID, "more work")
	b.tick(t, townID, nil)
	require.Equal(t, p, b.dispatch(t, townID, rigID, second), "the idle polecat takes the new work")
	require.Equal(t, second, b.agentRow(t, townID, p).HookBeadID)

	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: p, Payload: reconciler.AgentCompletedPayload{Status: "failed", BeadID: first}})
	a := b.agentRow(t, townID, p)
	require.Equal(t, second, a.HookBeadID)
	require.Equal(t, reconciler.AgentWorking, a.Status)
	require.Equal(t, reconciler.StatusInProgress, b.bead(t, townID, second).Status)

	// The exit of the current run still counts.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: p, Payload: reconciler.AgentCompletedPayload{Status: "failed", BeadID: second}})
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, second).Status)
	require.Empty(t, b.agentRow(t, townID, p).HookBeadID)
}

func TestAgentCompletedEvictionGuard(t *testing.T) {
	t.Parallel()
	for _, stale := range []bool{true, false} {
		b := setup(t)
		townID, rigID := b.town(t)
		issue := b.issue(t, townID, rigID, "work")
		b.tick(t, townID, nil)
		p := b.dispatch(t, townID, rigID, issue) // last activity = b.now
		if stale {
			b.now = b.now.Add(reconciler.HeartbeatStale + time.Second)
		}
		b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: p, Payload: reconciler.AgentCompletedPayload{Status: "completed", Reason: "container eviction"}})
		bd := b.bead(t, townID, issue)
		if stale {
			require.Equal(t, reconciler.StatusOpen, bd.Status)
			require.Empty(t, bd.AssigneeID)
		} else {
			require.Equal(t, reconciler.StatusInProgress, bd.Status, "a fresh heartbeat keeps the bead in progress (#3538)")
		}
	}
}

func TestAgentCompletedRefineryKeepsHookAndAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: ref, Payload: reconciler.AgentCompletedPayload{Status: "failed"}})
	a := b.agentRow(t, townID, ref)
	require.Equal(t, mr, a.HookBeadID)
	require.Equal(t, 1, a.DispatchAttempts, "kept for R6's cap")
	require.Equal(t, reconciler.StatusInProgress, b.bead(t, townID, mr).Status)
	// A missing agent is a silent no-op.
	dr, _ := b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: db.NewID(), Payload: reconciler.AgentCompletedPayload{Status: "completed"}})
	require.Equal(t, 1, dr.Applied)
}

// --- container status, eviction, draining ---

func TestContainerStatusGraceAndExit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "work")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)

	record := func(status string) {
		ok, err := b.store.RecordContainerStatus(ctx, b.store.Pool, townID, p, status, "")
		require.NoError(t, err)
		if status != "running" {
			require.True(t, ok)
		} else {
			require.False(t, ok, "running is never stored")
		}
		b.tick(t, townID, nil)
	}
	record("running")
	b.now = b.now.Add(60 * time.Second)
	record("not_found")
	require.Equal(t, reconciler.AgentWorking, b.agentRow(t, townID, p).Status, "cold-start grace")
	record("starting")
	require.Equal(t, reconciler.AgentWorking, b.agentRow(t, townID, p).Status, "other statuses are audit only")
	b.now = b.now.Add(140 * time.Second)
	record("not_found")
	a := b.agentRow(t, townID, p)
	require.Equal(t, reconciler.AgentIdle, a.Status)
	require.Equal(t, issue, a.HookBeadID, "the hook stays; B3 recovers the bead")
	require.Equal(t, reconciler.StatusInProgress, b.bead(t, townID, issue).Status)

	// A pending status is not stored twice.
	ok, err := b.store.RecordContainerStatus(ctx, b.store.Pool, townID, p, "exited", "")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = b.store.RecordContainerStatus(ctx, b.store.Pool, townID, p, "exited", "")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestContainerExitUnhooksRefineryOfFinishedMR(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	_, _, mr := b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.tick(t, townID, []reconciler.Action{reconciler.TransitionBead{BeadID: mr, To: reconciler.StatusClosed, Actor: "test"}})
	_, err := b.store.RecordContainerStatus(ctx, b.store.Pool, townID, ref, "exited", "done")
	require.NoError(t, err)
	b.tick(t, townID, nil)
	a := b.agentRow(t, townID, ref)
	require.Equal(t, reconciler.AgentIdle, a.Status)
	require.Empty(t, a.HookBeadID)
}

func (b *testBundle) town1(t *testing.T, townID string) db.Town {
	t.Helper()
	tw, err := b.store.GetTown(context.Background(), townID)
	require.NoError(t, err)
	return tw
}

func TestDrainingStartsAndEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	evict := db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: "n1"}}

	b.event(t, townID, evict)
	require.True(t, b.town1(t, townID).Draining)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventContainerReady, Payload: reconciler.ContainerReadyPayload{Nonce: "wrong"}})
	require.True(t, b.town1(t, townID).Draining, "a wrong nonce changes nothing")
	b.event(t, townID, db.NewEvent{Type: reconciler.EventContainerReady, Payload: reconciler.ContainerReadyPayload{Nonce: "n1"}})
	require.False(t, b.town1(t, townID).Draining)

	// A heartbeat from a new container instance ends a drain.
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	hb := func(instance string) {
		require.NoError(t, b.store.RecordHeartbeat(ctx, townID, p, db.Heartbeat{ContainerInstanceID: instance}))
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
		require.NoError(t, err)
		_, err = tt.ApplyHeartbeats(ctx)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
	}
	hb("c1")
	b.event(t, townID, evict)
	hb("c1")
	require.True(t, b.town1(t, townID).Draining)
	hb("c2")
	require.False(t, b.town1(t, townID).Draining)

	// The safety net ends a drain after 7 minutes.
	b.event(t, townID, evict)
	b.now = b.now.Add(reconciler.DrainAutoClear + time.Second)
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	require.NoError(t, tt.CheckDrainTimeout(ctx))
	require.False(t, tt.Draining())
	require.NoError(t, tx.Commit(ctx))
	require.False(t, b.town1(t, townID).Draining)
}

// --- PR events ---

func (b *testBundle) prMR(t *testing.T, townID, rigID string) (issue, mr string) {
	t.Helper()
	issue, _, mr = b.polecatInReview(t, townID, rigID)
	ref := b.refineryOn(t, townID, rigID, mr)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x", PRURL: "https://github.com/o/r/pull/7"}})
	return issue, mr
}

func TestPRStatusChanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue, mr := b.prMR(t, townID, rigID)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRStatusChanged, BeadID: mr, Payload: reconciler.PRStatusChangedPayload{PRState: "merged"}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, mr).Status)
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, issue).Status)

	issue2, mr2 := b.prMR(t, townID, rigID)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRStatusChanged, BeadID: mr2, Payload: reconciler.PRStatusChangedPayload{PRState: "closed"}})
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, mr2).Status)
	require.Equal(t, reconciler.StatusOpen, b.bead(t, townID, issue2).Status)
}

func TestPRFeedbackDedupeAndConsolidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, mr := b.prMR(t, townID, rigID)
	fb := db.NewEvent{Type: reconciler.EventPRFeedbackDetected, BeadID: mr, Payload: reconciler.PRFeedbackDetectedPayload{
		MRBeadID: mr, PRURL: "https://github.com/o/r/pull/7", PRNumber: 7, Repo: "o/r", Branch: "x", HasFailingChecks: true}}
	b.event(t, townID, fb)
	b.event(t, townID, fb)
	var feedback []reconciler.Bead
	for _, bd := range b.beadsOf(t, townID, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelPRFeedback) {
			feedback = append(feedback, bd)
		}
	}
	require.Len(t, feedback, 1, "a second identical event is a no-op")
	require.Equal(t, "Address review comments & failing CI on PR #7 (r)", feedback[0].Title)
	require.Equal(t, mr, feedback[0].ParentID)
	require.Equal(t, rigID, feedback[0].RigID)

	// A conflict while feedback is live: the feedback bead takes it over.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr, Branch: "x"}})
	require.True(t, b.bead(t, townID, feedback[0].ID).MetaTruthy("has_conflicts"))
}

func TestPRConflictCreatesFixupOrEscalates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, mr := b.prMR(t, townID, rigID)
	conflict := db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr, PRURL: "https://github.com/o/r/pull/7", Branch: "x"}}
	b.event(t, townID, conflict)
	b.event(t, townID, conflict)
	var fix []reconciler.Bead
	for _, bd := range b.beadsOf(t, townID, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelPRConflict) {
			fix = append(fix, bd)
		}
	}
	require.Len(t, fix, 1)
	require.Equal(t, "Resolve merge conflicts on PR: x", fix[0].Title)
	// Feedback while the conflict bead is live: absorbed.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRFeedbackDetected, BeadID: mr, Payload: reconciler.PRFeedbackDetectedPayload{MRBeadID: mr, HasUnresolvedComments: true}})
	require.True(t, b.bead(t, townID, fix[0].ID).MetaTruthy("has_feedback"))

	// Auto-resolution off for the rig: an escalation and a triage request instead.
	off := false
	b2 := setup(t)
	town2, rig2 := b2.town(t)
	b2.event(t, town2, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{RigID: rig2, Config: &reconciler.RigConfig{AutoResolveMergeConflicts: &off}}})
	_, mr2 := b2.prMR(t, town2, rig2)
	b2.event(t, town2, db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr2, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr2, Branch: "x"}})
	esc := b2.beadsOf(t, town2, reconciler.BeadEscalation)
	require.Len(t, esc, 1)
	require.Equal(t, reconciler.PriorityHigh, esc[0].Priority)
	require.True(t, esc[0].HasLabel("severity:high"))
	var triage []reconciler.Bead
	for _, bd := range b2.beadsOf(t, town2, reconciler.BeadIssue) {
		require.False(t, bd.HasLabel(reconciler.LabelPRConflict), "no conflict issue")
		if bd.HasLabel(reconciler.LabelTriageRequest) {
			triage = append(triage, bd)
		}
	}
	require.Len(t, triage, 1)
	require.Equal(t, "escalation", triage[0].MetaString("triage_type"))
	// The same MR again: deduped; another MR in conflict: a request of its own (a request
	// about no agent dedupes on its MR, not on every other agentless request).
	b2.event(t, town2, db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr2, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr2, Branch: "x"}})
	_, mr3 := b2.prMR(t, town2, rig2)
	b2.event(t, town2, db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr3, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr3, Branch: "y"}})
	about := map[string]int{}
	for _, bd := range b2.beadsOf(t, town2, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelTriageRequest) {
			about[bd.MetaString("hooked_bead_id")]++
		}
	}
	require.Equal(t, map[string]int{mr2: 1, mr3: 1}, about)
	var cat string
	require.NoError(t, b2.store.Pool.QueryRow(context.Background(), "SELECT category FROM escalation_metadata WHERE town_id = $1", town2).Scan(&cat))
	require.Equal(t, "merge_conflict", cat)
}

func townWithRefinery(b *testBundle, t *testing.T, cfg reconciler.TownConfig) (string, string) {
	t.Helper()
	townID, rigID := b.town(t)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventTownConfigUpdated, Payload: reconciler.TownConfigPayload{Config: cfg}})
	return townID, rigID
}

func TestPRPolledDecisionTree(t *testing.T) {
	t.Parallel()
	yes, delay := true, 5
	b := setup(t)
	ctx := context.Background()
	townID, rigID := townWithRefinery(b, t, reconciler.TownConfig{Refinery: &reconciler.RefineryConfig{AutoMergeDelayMinutes: &delay, AutoResolvePRFeedback: &yes}})
	_, mr := b.prMR(t, townID, rigID)
	url := "https://github.com/o/r/pull/7"
	green := reconciler.PRFeedback{AllChecksPass: true}
	polled := func(state string, f *reconciler.PRFeedback) {
		b.event(t, townID, db.NewEvent{Type: reconciler.EventPRPolled, BeadID: mr, Payload: reconciler.PRPolledPayload{
			MRBeadID: mr, PRURL: url, State: "open", MergeableState: state, Feedback: f, StillOpen: true, PRNumber: 7, Repo: "o/r"}})
	}
	readySince := func() *time.Time {
		var at *time.Time
		require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT auto_merge_ready_since FROM review_metadata WHERE town_id = $1 AND bead_id = $2", townID, mr).Scan(&at))
		return at
	}
	// Failure counters reset by a good poll.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRPollFailed, BeadID: mr, Payload: reconciler.PRPollFailedPayload{MRBeadID: mr, Kind: "http_error", Transient: true}})
	require.EqualValues(t, 1, b.bead(t, townID, mr).Metadata["poll_transient_count"])
	polled("clean", &green)
	require.EqualValues(t, 0, b.bead(t, townID, mr).Metadata["poll_transient_count"])
	require.NotNil(t, readySince(), "green starts the grace period")
	b.now = b.now.Add(4 * time.Minute)
	polled("clean", &green)
	require.False(t, b.bead(t, townID, mr).MetaTruthy("auto_merge_pending"))
	b.now = b.now.Add(time.Minute)
	polled("clean", &green)
	require.True(t, b.bead(t, townID, mr).MetaTruthy("auto_merge_pending"), "merge after the delay")
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRMergeFailed, BeadID: mr, Payload: reconciler.PRMergeFailedPayload{MRBeadID: mr, Reason: "x"}})
	require.False(t, b.bead(t, townID, mr).MetaTruthy("auto_merge_pending"))
	require.Nil(t, readySince())

	// Failing checks: feedback bead, timer cleared.
	polled("clean", &green)
	polled("clean", &reconciler.PRFeedback{HasFailingChecks: true})
	require.Nil(t, readySince())
	var feedback int
	for _, bd := range b.beadsOf(t, townID, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelPRFeedback) {
			feedback++
		}
	}
	require.Equal(t, 1, feedback)

	// Conflicts: flagged once, conflict bead created.
	polled("dirty", nil)
	m := b.bead(t, townID, mr)
	require.True(t, m.MetaTruthy("has_conflicts"))
	polled("clean", nil)
	_, has := b.bead(t, townID, mr).Metadata["has_conflicts"]
	require.False(t, has)
}

func TestPRPollFailureThresholds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kind      string
		transient bool
		failAt    int
	}{{"http_error", true, reconciler.PRPollTransientLimit}, {"invalid_response", false, reconciler.PRPollNonTransientLimit}, {"no_token", false, 1}, {"http_error", false, 1}}
	for _, c := range cases {
		b := setup(t)
		townID, rigID := b.town(t)
		_, mr := b.prMR(t, townID, rigID)
		for i := 1; i <= c.failAt; i++ {
			b.event(t, townID, db.NewEvent{Type: reconciler.EventPRPollFailed, BeadID: mr, Payload: reconciler.PRPollFailedPayload{MRBeadID: mr, Kind: c.kind, Transient: c.transient, Message: "nope"}})
			m := b.bead(t, townID, mr)
			if i < c.failAt {
				require.Equal(t, reconciler.StatusInProgress, m.Status, "%s after %d", c.kind, i)
			} else {
				require.Equal(t, reconciler.StatusFailed, m.Status, "%s after %d", c.kind, i)
				require.Equal(t, "pr_poll_failed", m.MetaString("failureReason"))
				require.Equal(t, c.kind, m.MetaString("failureKind"))
			}
		}
	}
}

func TestPRAutoMergeOnlyOnLiveMR(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, mr := b.prMR(t, townID, rigID)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRAutoMerge, BeadID: mr, Payload: reconciler.PRAutoMergePayload{MRBeadID: mr}})
	require.True(t, b.bead(t, townID, mr).MetaTruthy("auto_merge_pending"))
	// Missing MR: no-op, processed.
	dr, _ := b.event(t, townID, db.NewEvent{Type: reconciler.EventPRAutoMerge, Payload: reconciler.PRAutoMergePayload{MRBeadID: db.NewID()}})
	require.Equal(t, 1, dr.Applied)
}

// --- cancellation, convoys ---

func TestBeadCancelledStopsItsAgent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	_, tt := b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: issue, Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, issue).Status)
	a := b.agentRow(t, townID, p)
	require.Empty(t, a.HookBeadID)
	require.Equal(t, []db.SideEffect{db.StopAgentEffect{AgentID: p, Reason: "bead " + issue + " cancelled"}}, tt.SideEffects())
	// For a bead that does not exist: processed, nothing else.
	dr, _ := b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: db.NewID(), Payload: reconciler.BeadCancelledPayload{}})
	require.Equal(t, 1, dr.Applied)
}

func TestTerminalBeadsAreImmutable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: issue, Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusFailed}})
	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadStatusChanged, BeadID: issue, Payload: reconciler.BeadStatusChangedPayload{Status: reconciler.StatusOpen}})
	_, ar, _ := b.tick(t, townID, []reconciler.Action{reconciler.TransitionBead{BeadID: issue, To: reconciler.StatusClosed}})
	require.Equal(t, 1, ar.Skipped)
	require.Equal(t, reconciler.StatusFailed, b.bead(t, townID, issue).Status)
}

func (b *testBundle) convoy(t *testing.T, townID, rigID, mode string, staged bool) (convoy string, tasks []string) {
	t.Helper()
	convoy = db.NewID()
	tasks = []string{db.NewID(), db.NewID()}
	b.event(t, townID, db.NewEvent{Type: reconciler.EventConvoyCreated, BeadID: convoy, Payload: reconciler.ConvoyCreatedPayload{
		Title: "Big Feature!", MergeMode: mode, Staged: staged, Tasks: []reconciler.ConvoyTask{
			{BeadID: tasks[0], Title: "first", RigID: rigID},
			{BeadID: tasks[1], Title: "second", RigID: rigID, BlockedBy: []string{tasks[0]}},
		}}})
	return convoy, tasks
}

func TestConvoyReviewAndMergeClosesWhenTasksFinish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	convoy, tasks := b.convoy(t, townID, rigID, reconciler.MergeModeAndMerge, true)
	var staged bool
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT staged FROM convoy_metadata WHERE town_id = $1 AND bead_id = $2", townID, convoy).Scan(&staged))
	require.True(t, staged)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventConvoyStarted, Payload: reconciler.ConvoyStartedPayload{ConvoyID: convoy}})
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT staged FROM convoy_metadata WHERE town_id = $1 AND bead_id = $2", townID, convoy).Scan(&staged))
	require.False(t, staged)

	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: tasks[0], Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusFailed}})
	require.Equal(t, reconciler.StatusOpen, b.bead(t, townID, convoy).Status)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: tasks[1], Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, convoy).Status, "all tasks terminal (one failed): the convoy closes")
}

func TestConvoyReviewThenLand(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	convoy, tasks := b.convoy(t, townID, rigID, "", false)
	c := b.bead(t, townID, convoy)
	require.Regexp(t, `^convoy/big-feature/[0-9a-f]{8}/head$`, c.MetaString("feature_branch"))
	// A task's MR targets the feature branch.
	p := b.dispatch(t, townID, rigID, tasks[0])
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p, Payload: reconciler.AgentDonePayload{Branch: "t0"}})
	var target string
	require.NoError(t, b.store.Pool.QueryRow(context.Background(), "SELECT target_branch FROM review_metadata WHERE town_id = $1", townID).Scan(&target))
	require.Equal(t, c.MetaString("feature_branch"), target)
	for _, task := range tasks {
		b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: task, Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
	}
	// Task 0's MR is still open: not done yet.
	require.False(t, b.bead(t, townID, convoy).MetaTruthy("ready_to_land"))
	mr := b.beadsOf(t, townID, reconciler.BeadMergeRequest)[0]
	b.tick(t, townID, []reconciler.Action{reconciler.TransitionBead{BeadID: mr.ID, To: reconciler.StatusFailed}})
	require.True(t, b.bead(t, townID, convoy).MetaTruthy("ready_to_land"))

	// Landing MR: counted, targets the rig default, created by system; merging it lands the convoy.
	_, ar, _ := b.tick(t, townID, []reconciler.Action{
		reconciler.CreateLandingMR{ConvoyID: convoy, RigID: rigID, FeatureBranch: c.MetaString("feature_branch"), TargetBranch: "trunk"},
		reconciler.CreateLandingMR{ConvoyID: convoy, RigID: rigID, FeatureBranch: c.MetaString("feature_branch"), TargetBranch: "trunk"},
	})
	require.Equal(t, 1, ar.Applied)
	require.Equal(t, 1, ar.Skipped, "the second sees a stale attempt count")
	require.EqualValues(t, 1, b.bead(t, townID, convoy).Metadata["landing_mr_attempts"])
	var landing reconciler.Bead
	for _, m := range b.beadsOf(t, townID, reconciler.BeadMergeRequest) {
		if m.CreatedBy == reconciler.CreatedBySystem {
			landing = m
		}
	}
	require.Equal(t, rigID, landing.RigID)
	ref := b.refineryOn(t, townID, rigID, landing.ID)
	b.event(t, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "x"}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, convoy).Status)
	var landed *time.Time
	require.NoError(t, b.store.Pool.QueryRow(context.Background(), "SELECT landed_at FROM convoy_metadata WHERE town_id = $1", townID).Scan(&landed))
	require.NotNil(t, landed)
}

// --- actions ---

func TestAgentActions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)

	_, ar, _ := b.tick(t, townID, []reconciler.Action{
		reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentIdle, To: reconciler.AgentStalled},
		reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentWorking, To: reconciler.AgentStalled},
	})
	require.Equal(t, 1, ar.Skipped)
	a := b.agentRow(t, townID, p)
	require.Equal(t, reconciler.AgentStalled, a.Status)
	require.False(t, a.StalledAt.IsZero())

	_, ar, _ = b.tick(t, townID, []reconciler.Action{
		reconciler.ResetAgentDispatchAttempts{AgentID: p},
		reconciler.ClearAgentCheckpoint{AgentID: p},
		reconciler.UnhookAgent{AgentID: p, ExpectHook: db.NewID()},
		reconciler.UnhookAgent{AgentID: p, ExpectHook: issue},
	})
	require.Equal(t, 3, ar.Applied)
	require.Equal(t, 1, ar.Skipped)
	a = b.agentRow(t, townID, p)
	require.Empty(t, a.HookBeadID)
	require.True(t, a.StalledAt.IsZero(), "stalled_at clears with the status")
	require.Zero(t, b.bead(t, townID, issue).DispatchAttempts)

	// delete_agent: only an unhooked agent in the expected status; its live beads reopen.
	b.tick(t, townID, []reconciler.Action{reconciler.HookAgent{AgentID: p, BeadID: issue}})
	_, ar, _ = b.tick(t, townID, []reconciler.Action{reconciler.DeleteAgent{AgentID: p, ExpectStatus: reconciler.AgentIdle}})
	require.Equal(t, 1, ar.Skipped, "hooked agents are not deleted")
	b.tick(t, townID, []reconciler.Action{reconciler.UnhookAgent{AgentID: p}})
	_, ar, _ = b.tick(t, townID, []reconciler.Action{reconciler.DeleteAgent{AgentID: p, ExpectStatus: reconciler.AgentIdle, Reason: "GC"}})
	require.Equal(t, 1, ar.Applied)
	_, err := b.store.GetAgent(context.Background(), townID, p)
	require.ErrorIs(t, err, db.ErrNotFound)
	bd := b.bead(t, townID, issue)
	require.Equal(t, reconciler.StatusOpen, bd.Status)
	require.Empty(t, bd.AssigneeID)
}

func TestSideEffectActions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, mr := b.prMR(t, townID, rigID)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	url := "https://github.com/o/r/pull/7"
	_, ar, tt := b.tick(t, townID, []reconciler.Action{
		reconciler.StopAgent{AgentID: p, Reason: "r"},
		reconciler.PollPR{BeadID: mr, PRURL: url},
		reconciler.MergePR{BeadID: mr, PRURL: url},
		reconciler.SendNudge{AgentID: p, Message: "hi", Tier: reconciler.TierWarn},
		reconciler.CreateTriageRequest{AgentID: p, TriageType: "stuck_agent", Reason: "GUPP"},
		reconciler.CreateTriageRequest{AgentID: p, TriageType: "stuck_agent", Reason: "GUPP"},
		reconciler.EmitEvent{Name: "x", Data: map[string]any{"a": 1}},
	})
	require.Equal(t, 7, ar.Applied)
	effects := tt.SideEffects()
	require.Len(t, effects, 4)
	require.Equal(t, db.StopAgentEffect{AgentID: p, Reason: "r"}, effects[0])
	require.Equal(t, db.PollPREffect{MRBeadID: mr, PRURL: url}, effects[1])
	require.Equal(t, db.MergePREffect{MRBeadID: mr, PRURL: url}, effects[2])
	nudge := effects[3].(db.SendMessageEffect)
	require.Equal(t, p, nudge.AgentID)
	require.NotEmpty(t, nudge.NudgeID)
	require.NotZero(t, b.bead(t, townID, mr).Metadata["last_poll_at"])
	var triage int
	for _, bd := range b.beadsOf(t, townID, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelTriageRequest) {
			triage++
			require.Equal(t, p, bd.AssigneeID)
		}
	}
	require.Equal(t, 1, triage, "deduped")

	// The nudge is delivered once reported.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventNudgeDelivered, AgentID: p, Payload: reconciler.DeliveryPayload{NudgeID: nudge.NudgeID}})
	var delivered *time.Time
	require.NoError(t, b.store.Pool.QueryRow(context.Background(), "SELECT delivered_at FROM agent_nudges WHERE town_id = $1", townID).Scan(&delivered))
	require.NotNil(t, delivered)

	// merge_pr for a PR of another repository than the rig's is dropped.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{RigID: rigID, GitURL: "https://github.com/other/repo.git"}})
	_, _, tt = b.tick(t, townID, []reconciler.Action{reconciler.MergePR{BeadID: mr, PRURL: url}})
	require.Empty(t, tt.SideEffects())
}

func TestTriageRequestCap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	var actions []reconciler.Action
	for range 7 {
		issue := b.issue(t, townID, rigID, "w")
		b.tick(t, townID, nil)
		p := b.dispatch(t, townID, rigID, issue)
		actions = append(actions, reconciler.CreateTriageRequest{AgentID: p, TriageType: "stuck_agent", Reason: "x"})
	}
	b.tick(t, townID, actions)
	n := 0
	for _, bd := range b.beadsOf(t, townID, reconciler.BeadIssue) {
		if bd.HasLabel(reconciler.LabelTriageRequest) {
			n++
		}
	}
	require.Equal(t, reconciler.MaxOpenTriageRequests, n)
}

// --- housekeeping ---

func (b *testBundle) housekeep(t *testing.T, townID string) (db.HousekeepingResult, []db.SideEffect) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	res, err := tt.Housekeeping(ctx, reconciler.EventRetention)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	return res, tt.SideEffects()
}

func TestHousekeepingMailNudgesTriagePrune(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	mail := db.NewID()
	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: mail, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadMessage, Title: "hello", Body: "from the mayor", AssigneeID: p, Labels: []string{reconciler.LabelMessage}}})

	res, effects := b.housekeep(t, townID)
	require.Equal(t, 1, res.MailRequested)
	require.Equal(t, []db.SideEffect{db.SendMessageEffect{AgentID: p, Message: "hello\n\nfrom the mayor", MailBeadID: mail}}, effects)
	res, _ = b.housekeep(t, townID)
	require.Zero(t, res.MailRequested, "requested once")
	b.event(t, townID, db.NewEvent{Type: reconciler.EventMailDeliveryFailed, Payload: reconciler.DeliveryPayload{BeadID: mail}})
	res, _ = b.housekeep(t, townID)
	require.Equal(t, 1, res.MailRequested, "offered again after a failed delivery")
	// A request that never reports (its job's process died; River does not run a message
	// twice) is offered again once MailReofferAfter has passed, not before.
	b.now = b.now.Add(db.MailReofferAfter - time.Second)
	res, _ = b.housekeep(t, townID)
	require.Zero(t, res.MailRequested, "its job may still be at work")
	b.now = b.now.Add(2 * time.Second)
	res, _ = b.housekeep(t, townID)
	require.Equal(t, 1, res.MailRequested, "offered again when no outcome came")
	b.event(t, townID, db.NewEvent{Type: reconciler.EventMailDelivered, Payload: reconciler.DeliveryPayload{BeadID: mail}})
	require.Equal(t, reconciler.StatusClosed, b.bead(t, townID, mail).Status)
	// A client's metadata may hold anything under the key: a value that is no time fails
	// nothing (the mail counts as asked for), where a cast would fail every tick.
	odd := db.NewID()
	b.event(t, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: odd, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadMessage, Title: "odd", AssigneeID: p, Labels: []string{reconciler.LabelMessage},
		Metadata: map[string]any{"delivery_requested_at": "2026-02-31T00:00:00Z"}}})
	res, _ = b.housekeep(t, townID)
	require.Zero(t, res.MailRequested)

	// Triage: a waiting request starts one batch bead of the town's rig.
	b.tick(t, townID, []reconciler.Action{reconciler.CreateTriageRequest{AgentID: p, TriageType: "stuck_agent", Reason: "x"}})
	res, _ = b.housekeep(t, townID)
	require.True(t, res.TriageBatch)
	res, _ = b.housekeep(t, townID)
	require.False(t, res.TriageBatch, "one batch at a time")

	// Pruning: processed events older than the retention go.
	evs, err := b.store.ListEvents(ctx, townID, "processed", 1000)
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	b.now = b.now.Add(reconciler.EventRetention + 24*time.Hour)
	res, _ = b.housekeep(t, townID)
	require.Equal(t, len(evs), res.EventsPruned)
}

func TestReEscalation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	_, mr := b.prMR(t, townID, rigID)
	off := false
	b.event(t, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{RigID: rigID, Config: &reconciler.RigConfig{AutoResolveMergeConflicts: &off}}})
	b.event(t, townID, db.NewEvent{Type: reconciler.EventPRConflictDetected, BeadID: mr, Payload: reconciler.PRConflictDetectedPayload{MRBeadID: mr, Branch: "x"}})
	severity := func() (string, int) {
		var s string
		var n int
		require.NoError(t, b.store.Pool.QueryRow(context.Background(), "SELECT severity, re_escalation_count FROM escalation_metadata WHERE town_id = $1", townID).Scan(&s, &n))
		return s, n
	}
	res, _ := b.housekeep(t, townID)
	require.Zero(t, res.ReEscalated)
	b.now = b.now.Add(4*time.Hour + time.Minute)
	res, _ = b.housekeep(t, townID)
	require.Equal(t, 1, res.ReEscalated)
	s, n := severity()
	require.Equal(t, "critical", s)
	require.Equal(t, 1, n)
	for range 5 {
		b.now = b.now.Add(12 * time.Hour)
		b.housekeep(t, townID)
	}
	_, n = severity()
	require.Equal(t, reconciler.MaxReEscalations, n, "at most three times")
}

func TestDeletingAnAgentRemovesItsPendingEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	b.tick(t, townID, []reconciler.Action{reconciler.UnhookAgent{AgentID: p}, reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentIdle, To: reconciler.AgentIdle}})
	// An event about the agent waits; the agent is deleted in the same tick's actions.
	b.append(t, townID, db.NewEvent{Type: reconciler.EventAgentStopped, AgentID: p})
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	ar, err := tt.ApplyActions(ctx, []reconciler.Action{reconciler.DeleteAgent{AgentID: p, Reason: "GC"}})
	require.NoError(t, err)
	require.Equal(t, 1, ar.Applied)
	require.NoError(t, tx.Commit(ctx))
	pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Empty(t, pending, "deleteBead takes the agent's events with it")
}

func TestViolationEpisodesStartPersistAndResolve(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, _ := b.town(t)
	v7 := reconciler.Violation{Invariant: 7, SubjectID: "a1", Message: "Working agent a1 has no hook"}
	v4 := reconciler.Violation{Invariant: 4, SubjectID: "i1", Message: "x"}
	record := func(found ...reconciler.Violation) []reconciler.Violation {
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		tt, err := b.store.LockTown(ctx, tx, townID, b.now, false, quiet)
		require.NoError(t, err)
		started, err := tt.RecordViolations(ctx, found)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(ctx))
		b.now = b.now.Add(5 * time.Second)
		return started
	}
	require.Equal(t, []reconciler.Violation{v7}, record(v7))
	require.Empty(t, record(v7), "a persisting violation is not reported again")
	require.Equal(t, []reconciler.Violation{v4}, record(v7, v4))
	require.Empty(t, record(v4))
	require.Equal(t, []reconciler.Violation{v7}, record(v7, v4), "a new episode after it was resolved")
	var ticks int
	require.NoError(t, b.store.Pool.QueryRow(ctx, "SELECT ticks_seen FROM invariant_violations WHERE town_id = $1 AND invariant = 4 AND resolved_at IS NULL", townID).Scan(&ticks))
	require.Equal(t, 3, ticks, "the count is kept current")
}

// One action whose statements fail (here a CHECK constraint) is rolled back alone; the
// rest of the tick applies and commits.
func TestAFailingActionDoesNotStopTheTick(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "w")
	b.tick(t, townID, nil)
	p := b.dispatch(t, townID, rigID, issue)
	_, ar, tt := b.tick(t, townID, []reconciler.Action{
		reconciler.StopAgent{AgentID: p, Reason: "x"},
		reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentWorking, To: "bogus"}, // violates the status CHECK
		reconciler.TransitionBead{BeadID: issue, From: reconciler.StatusInProgress, To: reconciler.StatusInReview, Actor: "test"},
	})
	require.Equal(t, 2, ar.Applied)
	require.Equal(t, 1, ar.Skipped)
	require.Equal(t, 1, ar.Failed)
	require.Len(t, tt.SideEffects(), 1, "the stop survives the failed action")
	require.Equal(t, reconciler.StatusInReview, b.bead(t, townID, issue).Status)
	require.Equal(t, reconciler.AgentWorking, b.agentRow(t, townID, p).Status, "the failed action left nothing behind")
}

// TestRigUpdatedChangesOnlyWhatItGives: rig_updated is a partial change (PATCH): what it
// leaves out keeps its value, a config given replaces the whole configuration.
func TestRigUpdatedChangesOnlyWhatItGives(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID := b.town(t)
	on, two := true, 2
	b.event(t, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{
		RigID: rigID, GitURL: "https://github.com/acme/repo.git", Config: &reconciler.RigConfig{CodeReview: &on, MaxConcurrentPolecats: &two},
	}})
	rig, err := b.store.GetRig(ctx, townID, rigID)
	require.NoError(t, err)
	require.Equal(t, reconciler.Rig{ID: rigID, Name: "r", GitURL: "https://github.com/acme/repo.git", DefaultBranch: "trunk",
		Config: reconciler.RigConfig{CodeReview: &on, MaxConcurrentPolecats: &two}}, rig)

	// A new name alone: the git URL, branch and configuration stay.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{RigID: rigID, Name: "renamed"}})
	rig, err = b.store.GetRig(ctx, townID, rigID)
	require.NoError(t, err)
	require.Equal(t, reconciler.Rig{ID: rigID, Name: "renamed", GitURL: "https://github.com/acme/repo.git", DefaultBranch: "trunk",
		Config: reconciler.RigConfig{CodeReview: &on, MaxConcurrentPolecats: &two}}, rig)

	// A configuration replaces the whole configuration, and keeps the rest.
	b.event(t, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{RigID: rigID, Config: &reconciler.RigConfig{ReviewMode: "comments"}}})
	rig, err = b.store.GetRig(ctx, townID, rigID)
	require.NoError(t, err)
	require.Equal(t, reconciler.Rig{ID: rigID, Name: "renamed", GitURL: "https://github.com/acme/repo.git", DefaultBranch: "trunk",
		Config: reconciler.RigConfig{ReviewMode: "comments"}}, rig)
}
