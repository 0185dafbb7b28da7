package jobs

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"gastown/codehost"
	"gastown/db"
	"gastown/reconciler"
)

// The scenarios of SPEC.md §10, each run through real ticks (Ticker.Tick in a committed
// transaction, side effects inserted as River jobs) on Postgres, with a test clock.
// Scenarios 11 and 12 are TestPRFeedbackDedupeAndConsolidation and
// TestPRConflictCreatesFixupOrEscalates (db), 16's poison half is
// TestPoisonEventGoesDeadWithoutBlockingTheTown (db), 17 is TestDryRunIsSideEffectFree (web).

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type scenario struct {
	*testBundle
	clk    *clock
	host   *codehost.Simulator
	townID string
	rigID  string
}

func newScenario(t testing.TB, cfg reconciler.TownConfig) *scenario {
	t.Helper()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	b := setup(t, testOpts{})
	b.svc.Ticker.clock = clk.now
	host := codehost.NewSimulator()
	b.svc.codeHost = host
	ctx := context.Background()
	town, err := b.store.CreateTown(ctx, db.NewID(), "s", cfg, clk.now())
	require.NoError(t, err)
	rigID := db.NewID()
	_, err = b.svc.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rigID, Name: "r", DefaultBranch: "main"}})
	require.NoError(t, err)
	s := &scenario{testBundle: b, clk: clk, host: host, townID: town.ID, rigID: rigID}
	s.tick(t)
	return s
}

func (s *scenario) tick(t testing.TB) TickResult {
	t.Helper()
	res, err := s.testBundle.tick(context.Background(), s.townID)
	require.NoError(t, err)
	return res
}

func (s *scenario) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := s.store.Pool.Exec(context.Background(), sql, args...)
	require.NoError(t, err)
}

func (s *scenario) append(t testing.TB, evs ...db.NewEvent) {
	t.Helper()
	_, err := s.svc.Events.Append(context.Background(), s.townID, evs...)
	require.NoError(t, err)
}

func (s *scenario) issue(t testing.TB, labels ...string) string {
	t.Helper()
	ev := beadCreated(s.rigID, "work", labels...)
	s.append(t, ev)
	return ev.BeadID
}

func (s *scenario) bead(t *testing.T, id string) reconciler.Bead {
	t.Helper()
	b, err := s.store.GetBead(context.Background(), s.townID, id)
	require.NoError(t, err)
	return b
}

func (s *scenario) agent(t *testing.T, id string) reconciler.Agent {
	t.Helper()
	a, err := s.store.GetAgent(context.Background(), s.townID, id)
	require.NoError(t, err)
	return a
}

func (s *scenario) agents(t testing.TB) []reconciler.Agent {
	t.Helper()
	as, err := s.store.ListAgents(context.Background(), s.townID)
	require.NoError(t, err)
	return as
}

func (s *scenario) mrs(t *testing.T) []reconciler.Bead {
	t.Helper()
	out, err := s.store.ListBeads(context.Background(), s.townID, db.BeadFilter{Type: reconciler.BeadMergeRequest, Limit: 100})
	require.NoError(t, err)
	return out
}

func countType[T reconciler.Action](actions []reconciler.Action) int {
	n := 0
	for _, a := range actions {
		if _, ok := a.(T); ok {
			n++
		}
	}
	return n
}

// dispatched runs scenario 1 and returns the issue and its polecat.
func (s *scenario) dispatched(t testing.TB) (issue, polecat string) {
	t.Helper()
	issue = s.issue(t)
	res := s.tick(t)
	require.Equal(t, []reconciler.Action{reconciler.DispatchAgent{BeadID: issue, RigID: s.rigID}}, res.Actions)
	as := s.agents(t)
	require.Len(t, as, 1)
	return issue, as[0].ID
}

func TestScenario01UnassignedIssueIsDispatched(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue, p := s.dispatched(t)
	a := s.agent(t, p)
	require.Equal(t, "Toast", a.Name)
	require.Equal(t, reconciler.AgentWorking, a.Status)
	require.Equal(t, issue, a.HookBeadID)
	b := s.bead(t, issue)
	require.Equal(t, reconciler.StatusInProgress, b.Status)
	require.Equal(t, p, b.AssigneeID)
	jobs, err := s.svc.Client.JobList(context.Background(), river.NewJobListParams().Kinds(StartAgentArgs{}.Kind()))
	require.NoError(t, err)
	require.Len(t, jobs.Jobs, 1, "one side effect queued")
}

func TestScenario02Backoff(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue := s.issue(t, reconciler.LabelHeld)
	s.tick(t)
	s.exec(t, `UPDATE beads SET labels = '[]', dispatch_attempts = 2, last_dispatch_attempt_at = $2 WHERE bead_id = $1`, issue, s.clk.now().Add(-40*time.Second))
	require.Zero(t, countType[reconciler.DispatchAgent](s.tick(t).Actions), "needs 60 s")
	s.clk.add(21 * time.Second)
	require.Equal(t, 1, countType[reconciler.DispatchAgent](s.tick(t).Actions))

	other := s.issue(t, reconciler.LabelHeld)
	s.tick(t)
	s.exec(t, `UPDATE beads SET labels = '[]', dispatch_attempts = 5, last_dispatch_attempt_at = $2 WHERE bead_id = $1`, other, s.clk.now().Add(-time.Hour))
	res := s.tick(t)
	require.Contains(t, res.Actions, reconciler.Action(reconciler.TransitionBead{BeadID: other, From: reconciler.StatusOpen, To: reconciler.StatusFailed, Reason: "max dispatch attempts exceeded (5)", Actor: "system"}))
	require.Equal(t, reconciler.StatusFailed, s.bead(t, other).Status)
}

func TestScenario03SkippedBeads(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	held := s.issue(t, reconciler.LabelHeld)
	triage := s.issue(t, reconciler.LabelTriageRequest)
	blocker := s.issue(t, reconciler.LabelHeld)
	s.tick(t)
	s.exec(t, `UPDATE beads SET assignee_agent_bead_id = $2 WHERE bead_id = $1`, triage, db.NewID())
	s.exec(t, `UPDATE beads SET status = 'in_progress' WHERE bead_id = $1`, blocker)
	blocked := beadCreated(s.rigID, "blocked")
	blocked.Payload = reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: "blocked", RigID: s.rigID, BlockedBy: []string{blocker}}
	convoy := db.NewID()
	staged := db.NewID()
	s.append(t, blocked, db.NewEvent{Type: reconciler.EventConvoyCreated, BeadID: convoy, Payload: reconciler.ConvoyCreatedPayload{
		Title: "c", Staged: true, Tasks: []reconciler.ConvoyTask{{BeadID: staged, Title: "staged", RigID: s.rigID}}}})
	res := s.tick(t)
	for _, d := range res.Actions {
		if d, ok := d.(reconciler.DispatchAgent); ok {
			// (A triage batch bead for the open triage request may be dispatched.)
			require.NotContains(t, []string{held, triage, blocker, blocked.BeadID, staged}, d.BeadID)
		}
	}
	require.Zero(t, countType[reconciler.ClearBeadAssignee](res.Actions), "B1b leaves the triage request's assignee")
	s.exec(t, `UPDATE beads SET status = 'failed' WHERE bead_id = $1`, blocker)
	res = s.tick(t)
	require.Contains(t, res.Actions, reconciler.Action(reconciler.DispatchAgent{BeadID: blocked.BeadID, RigID: s.rigID}))
	require.Equal(t, 1, countType[reconciler.DispatchAgent](res.Actions))
}

func TestScenario04HeartbeatLoss(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue, p := s.dispatched(t)
	s.exec(t, `UPDATE beads SET updated_at = $2 WHERE bead_id = $1`, issue, s.clk.now().Add(-6*time.Minute))
	s.exec(t, `UPDATE agents SET last_activity_at = $2 WHERE agent_id = $1`, p, s.clk.now().Add(-100*time.Second))
	res := s.tick(t)
	require.Equal(t, []reconciler.Action{reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentWorking, To: reconciler.AgentIdle, Reason: "heartbeat lost (3 missed cycles)"}}, res.Actions, "B3 sees P still working")
	s.clk.add(5 * time.Second)
	res = s.tick(t)
	require.Contains(t, res.Actions, reconciler.Action(reconciler.UnhookAgent{AgentID: p, ExpectHook: issue, Reason: "idle agent hooked to live bead (dispatch failed)"}))
	require.Contains(t, res.Actions, reconciler.Action(reconciler.ClearBeadAssignee{BeadID: issue}))
	a := s.agent(t, p)
	require.Equal(t, reconciler.AgentIdle, a.Status)
	require.Empty(t, a.HookBeadID)
	b := s.bead(t, issue)
	require.Equal(t, reconciler.StatusOpen, b.Status)
	require.Empty(t, b.AssigneeID)
	s.clk.add(31 * time.Second) // past the backoff of its first attempt
	require.Equal(t, 1, countType[reconciler.DispatchAgent](s.tick(t).Actions), "dispatched again")
}

func TestScenario05ColdStartGrace(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		age  time.Duration
		idle bool
	}{{60 * time.Second, false}, {200 * time.Second, true}} {
		s := newScenario(t, reconciler.TownConfig{})
		issue, p := s.dispatched(t)
		// Heartbeats keep A1 quiet; the container status is what changes.
		s.exec(t, `UPDATE agents SET last_activity_at = $2 WHERE agent_id = $1`, p, s.clk.now().Add(-c.age))
		_, err := s.store.RecordContainerStatus(context.Background(), s.store.Pool, s.townID, p, "not_found", "")
		require.NoError(t, err)
		s.svc.Ticker.failEvent = nil
		res := s.tick(t)
		require.Equal(t, 1, res.Drain.Applied)
		a := s.agent(t, p)
		if c.idle {
			// The event set P idle and kept its hook; A4 then acted on that idle, hooked,
			// stale agent in the same tick's reconcile.
			require.Equal(t, reconciler.AgentIdle, a.Status)
			require.Contains(t, res.Actions, reconciler.Action(reconciler.UnhookAgent{AgentID: p, ExpectHook: issue, Reason: "idle agent hooked to live bead (dispatch failed)"}))
		} else {
			require.Equal(t, reconciler.AgentWorking, a.Status, "within the 180 s grace")
			require.Equal(t, issue, a.HookBeadID)
		}
	}
}

func TestScenario06DrainingSuppressesDispatchAndGUPP(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	stale, worker := s.dispatched(t)
	s.exec(t, `UPDATE agents SET last_activity_at = $2, last_event_at = $2 WHERE agent_id = $1`, worker, s.clk.now().Add(-3*time.Hour))
	lost := s.issue(t, reconciler.LabelHeld)
	open := s.issue(t, reconciler.LabelHeld)
	s.tick(t)
	s.exec(t, `UPDATE beads SET labels = '[]', status = 'in_progress', updated_at = $2 WHERE bead_id = $1`, lost, s.clk.now().Add(-6*time.Minute))
	s.exec(t, `UPDATE beads SET labels = '[]' WHERE bead_id = $1`, open)
	s.append(t, db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: "n"}})
	res := s.tick(t)
	require.Zero(t, countType[reconciler.DispatchAgent](res.Actions))
	require.Zero(t, countType[reconciler.TransitionAgent](res.Actions), "no A1, no GUPP")
	require.Zero(t, countType[reconciler.SendNudge](res.Actions))
	require.Contains(t, res.Actions, reconciler.Action(reconciler.TransitionBead{BeadID: lost, From: reconciler.StatusInProgress, To: reconciler.StatusOpen, Reason: "agent lost", Actor: "system"}), "B3 still runs")
	_ = stale
}

func TestScenario07And08DoneReviewMerge(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue, p := s.dispatched(t)
	s.append(t, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p, Payload: reconciler.AgentDonePayload{Branch: "gt/toast/abc"}})
	res := s.tick(t)
	mrs := s.mrs(t)
	require.Len(t, mrs, 1)
	mr := mrs[0]
	require.Equal(t, []reconciler.Action{
		reconciler.TransitionBead{BeadID: mr.ID, From: reconciler.StatusOpen, To: reconciler.StatusInProgress, Reason: "popped for review (creating refinery)", Actor: "system"},
		reconciler.DispatchAgent{BeadID: mr.ID, RigID: s.rigID},
	}, res.Actions)
	b := s.bead(t, issue)
	require.Equal(t, reconciler.StatusInReview, b.Status)
	require.Equal(t, p, b.AssigneeID)
	var ref reconciler.Agent
	for _, a := range s.agents(t) {
		if a.Role == reconciler.RoleRefinery {
			ref = a
		}
	}
	require.Equal(t, mr.ID, ref.HookBeadID)
	require.Equal(t, reconciler.AgentWorking, ref.Status)

	// Scenario 8: the refinery merges directly.
	s.append(t, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref.ID, Payload: reconciler.AgentDonePayload{Branch: "gt/toast/abc"}})
	s.tick(t)
	require.Equal(t, reconciler.StatusClosed, s.bead(t, mr.ID).Status)
	require.Equal(t, reconciler.StatusClosed, s.bead(t, issue).Status)
	ref = s.agent(t, ref.ID)
	require.Equal(t, reconciler.AgentIdle, ref.Status)
	require.Empty(t, ref.HookBeadID)
}

// prInFlight brings an MR to in_progress with a PR, as a refinery would.
func (s *scenario) prInFlight(t *testing.T) (issue, mr, url string) {
	t.Helper()
	issue, p := s.dispatched(t)
	s.append(t, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: p, Payload: reconciler.AgentDonePayload{Branch: "b"}})
	s.tick(t)
	mr = s.mrs(t)[0].ID
	var ref string
	for _, a := range s.agents(t) {
		if a.Role == reconciler.RoleRefinery {
			ref = a.ID
		}
	}
	url = "https://github.com/o/r/pull/5"
	s.append(t, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: ref, Payload: reconciler.AgentDonePayload{Branch: "b", PRURL: url}})
	s.tick(t)
	require.Equal(t, url, s.bead(t, mr).MetaString("pr_url"))
	return issue, mr, url
}

// runPolls works the poll_pr and merge_pr jobs the last tick queued, like River would.
func (s *scenario) runSideEffects(t *testing.T, res TickResult) {
	t.Helper()
	ctx := context.Background()
	for i, se := range res.SideEffects {
		switch args := sideEffectJob(s.townID, res.TickID, se).Args.(type) {
		case PollPRArgs:
			require.NoError(t, (&PollPRWorker{svc: s.svc}).Work(ctx, job(res.TickID*100+int64(i), args)))
		case MergePRArgs:
			require.NoError(t, (&MergePRWorker{svc: s.svc}).Work(ctx, job(res.TickID*100+int64(i), args)))
		}
	}
}

func TestScenario09PRMergedByPolling(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue, mr, url := s.prInFlight(t)
	s.exec(t, `UPDATE beads SET metadata = metadata || jsonb_build_object('last_poll_at', $2::timestamptz) WHERE bead_id = $1`, mr, s.clk.now().Add(-30*time.Second))
	require.Zero(t, countType[reconciler.PollPR](s.tick(t).Actions), "polled 30 s ago")
	s.clk.add(40 * time.Second)
	res := s.tick(t)
	require.Equal(t, 1, countType[reconciler.PollPR](res.Actions))
	s.host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "merged"}})
	s.runSideEffects(t, res)
	s.tick(t)
	require.Equal(t, reconciler.StatusClosed, s.bead(t, mr).Status)
	require.Equal(t, reconciler.StatusClosed, s.bead(t, issue).Status)
}

func TestScenario10AutoMerge(t *testing.T) {
	t.Parallel()
	yes, delay := true, 5
	s := newScenario(t, reconciler.TownConfig{Refinery: &reconciler.RefineryConfig{AutoMerge: &yes, AutoMergeDelayMinutes: &delay}})
	_, mr, url := s.prInFlight(t)
	pollNow := func() TickResult {
		s.clk.add(61 * time.Second)
		res := s.tick(t)
		s.runSideEffects(t, res)
		return res
	}
	// Poll 1 observes green; tick 2 applies it and starts the timer; tick k applies the
	// observation made 61 s × (k-2) later, so the 5-minute delay is reached at tick 7.
	for range 6 {
		pollNow()
	}
	require.False(t, s.bead(t, mr).MetaTruthy("auto_merge_pending"))
	s.clk.add(61 * time.Second)
	res := s.tick(t)
	require.True(t, s.bead(t, mr).MetaTruthy("auto_merge_pending"))
	require.Equal(t, 1, countType[reconciler.MergePR](res.Actions), "R1 merges in the same tick")
	// A new unresolved comment appears before the merge job runs: no merge, pending and
	// timer cleared.
	s.host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "open", MergeableState: "clean"},
		Feedback: reconciler.PRFeedback{AllChecksPass: true, HasUnresolvedComments: true}})
	s.runSideEffects(t, res)
	s.tick(t)
	require.False(t, s.bead(t, mr).MetaTruthy("auto_merge_pending"))
	require.Zero(t, s.host.Merges())
	// Green again: the timer restarts, and after the delay the merge goes through.
	s.host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "open", MergeableState: "clean"}, Feedback: reconciler.PRFeedback{AllChecksPass: true}})
	for range 7 {
		pollNow()
	}
	s.tick(t)
	require.Equal(t, 1, s.host.Merges())
	require.Equal(t, reconciler.StatusClosed, s.bead(t, mr).Status)
}

func TestScenario13CircuitBreaker(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	fail := func(n int) {
		evs := make([]db.NewEvent, n)
		for i := range evs {
			evs[i] = db.NewEvent{Type: reconciler.EventAgentDispatchFailed, AgentID: db.NewID(), Payload: reconciler.AgentDispatchedPayload{Error: "boom"}}
		}
		s.append(t, evs...)
	}
	fail(19)
	issue := s.issue(t)
	res := s.tick(t)
	require.Equal(t, 1, countType[reconciler.DispatchAgent](res.Actions), "19 failures: normal dispatch")
	fail(1)
	s.issue(t)
	res = s.tick(t)
	require.Zero(t, countType[reconciler.DispatchAgent](res.Actions))
	require.Equal(t, 1, countType[reconciler.NotifyMayor](res.Actions))
	_ = issue
}

func TestScenario14ReviewAndMergeConvoyCloses(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	convoy, a, b := db.NewID(), db.NewID(), db.NewID()
	s.append(t, db.NewEvent{Type: reconciler.EventConvoyCreated, BeadID: convoy, Payload: reconciler.ConvoyCreatedPayload{
		Title: "c", MergeMode: reconciler.MergeModeAndMerge, Staged: true,
		Tasks: []reconciler.ConvoyTask{{BeadID: a, Title: "a", RigID: s.rigID}, {BeadID: b, Title: "b", RigID: s.rigID}}}})
	s.tick(t)
	s.exec(t, `UPDATE beads SET status = 'closed' WHERE bead_id = $1`, a)
	s.exec(t, `UPDATE beads SET status = 'failed' WHERE bead_id = $1`, b)
	res := s.tick(t)
	require.Contains(t, res.Actions, reconciler.Action(reconciler.CloseConvoy{ConvoyID: convoy}))
	require.Equal(t, reconciler.StatusClosed, s.bead(t, convoy).Status)
}

func TestScenario15StalledAutoIdleBeatsGUPP(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	issue, p := s.dispatched(t)
	s.exec(t, `UPDATE agents SET status = 'stalled', stalled_at = $2, last_activity_at = $3, last_event_at = $3 WHERE agent_id = $1`,
		p, s.clk.now().Add(-160*time.Minute), s.clk.now().Add(-3*time.Hour))
	res := s.tick(t)
	require.Contains(t, res.Actions, reconciler.Action(reconciler.TransitionAgent{AgentID: p, From: reconciler.AgentStalled, To: reconciler.AgentIdle, Reason: "stalled_timeout: stalled for over 2.5h"}))
	require.Contains(t, res.Actions, reconciler.Action(reconciler.UnhookAgent{AgentID: p, ExpectHook: issue, Reason: "stalled_timeout"}))
	require.Zero(t, countType[reconciler.StopAgent](res.Actions), "GUPP emits nothing for it")
	require.Zero(t, countType[reconciler.SendNudge](res.Actions))
}

func TestScenario16OrphanEvents(t *testing.T) {
	t.Parallel()
	s := newScenario(t, reconciler.TownConfig{})
	s.append(t,
		db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: db.NewID(), Payload: reconciler.BeadCancelledPayload{}},
		db.NewEvent{Type: reconciler.EventAgentDone, AgentID: db.NewID(), Payload: reconciler.AgentDonePayload{Branch: "b"}})
	res := s.tick(t)
	require.Equal(t, 2, res.Drain.Applied)
	require.Zero(t, res.PendingEventCount)
}
