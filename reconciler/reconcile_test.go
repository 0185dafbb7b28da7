package reconciler_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "gastown/reconciler" //nolint:revive // the tests read like the spec
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return now.Add(-d) }

const (
	rig  = "rig-1"
	rig2 = "rig-2"
)

func town() *Snapshot {
	return &Snapshot{TownID: "town", Rigs: []Rig{{ID: rig, Name: "r", DefaultBranch: "main"}, {ID: rig2, Name: "r2", DefaultBranch: "main"}}}
}

func issue(id string, mods ...func(*Bead)) Bead {
	b := Bead{ID: id, Type: BeadIssue, Status: StatusOpen, RigID: rig, Title: id, CreatedAt: ago(time.Hour), UpdatedAt: ago(time.Hour)}
	for _, m := range mods {
		m(&b)
	}
	return b
}

func mr(id string, created time.Time, mods ...func(*Bead)) Bead {
	b := Bead{ID: id, Type: BeadMergeRequest, Status: StatusOpen, RigID: rig, Title: id, CreatedAt: created, UpdatedAt: created}
	for _, m := range mods {
		m(&b)
	}
	return b
}

func dispatches(actions []Action) []DispatchAgent {
	var out []DispatchAgent
	for _, a := range actions {
		if d, ok := a.(DispatchAgent); ok {
			out = append(out, d)
		}
	}
	return out
}

func TestB1DispatchesUnassignedOpenIssue(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i1")}
	actions := Reconcile(s, Options{}, now)
	require.Equal(t, []Action{DispatchAgent{BeadID: "i1", RigID: rig}}, actions)
}

func TestB1Backoff(t *testing.T) {
	t.Parallel()
	cases := []struct {
		attempts int
		last     time.Duration
		want     bool
	}{
		{1, 29 * time.Second, false}, {1, 31 * time.Second, true},
		{2, 40 * time.Second, false}, {2, 61 * time.Second, true},
		{3, 119 * time.Second, false}, {3, 121 * time.Second, true},
		{4, 299 * time.Second, false}, {4, 301 * time.Second, true},
	}
	for _, c := range cases {
		s := town()
		s.Beads = []Bead{issue("i1", func(b *Bead) { b.DispatchAttempts = c.attempts; b.LastDispatchAttemptAt = ago(c.last) })}
		got := len(dispatches(Reconcile(s, Options{}, now))) == 1
		require.Equal(t, c.want, got, "attempts %d, last attempt %s ago", c.attempts, c.last)
	}
}

func TestB1MaxAttemptsFails(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i1", func(b *Bead) { b.DispatchAttempts = 5; b.LastDispatchAttemptAt = ago(time.Hour) })}
	actions := Reconcile(s, Options{}, now)
	require.Len(t, actions, 1)
	tr := actions[0].(TransitionBead)
	require.Equal(t, StatusOpen, tr.From)
	require.Equal(t, StatusFailed, tr.To)

	// A rig override of max_dispatch_attempts is honoured.
	three := 3
	s = town()
	s.Rigs[0].Config.MaxDispatchAttempts = &three
	s.Beads = []Bead{issue("i1", func(b *Bead) { b.DispatchAttempts = 3; b.LastDispatchAttemptAt = ago(time.Hour) })}
	require.IsType(t, TransitionBead{}, Reconcile(s, Options{}, now)[0])
}

func TestB1SkipsHeldTriageStagedBlocked(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{
		issue("held", func(b *Bead) { b.Labels = []string{LabelHeld} }),
		issue("triage", func(b *Bead) { b.Labels = []string{LabelTriageRequest} }),
		issue("staged"),
		issue("blocked"),
		issue("blocker", func(b *Bead) { b.Status = StatusInProgress; b.AssigneeID = "someone" }),
		issue("no-rig", func(b *Bead) { b.RigID = "" }),
		issue("assigned", func(b *Bead) { b.AssigneeID = "agent" }),
		{ID: "convoy", Type: BeadConvoy, Status: StatusOpen},
	}
	s.Convoys = []Convoy{{BeadID: "convoy", Staged: true}}
	s.Dependencies = []Dependency{
		{BeadID: "staged", DependsOnID: "convoy", Type: DepTracks},
		{BeadID: "blocked", DependsOnID: "blocker", Type: DepBlocks},
	}
	require.Empty(t, dispatches(Reconcile(s, Options{}, now)))

	// The blocker fails: a failed blocker counts as resolved.
	s.Beads[4].Status = StatusFailed
	require.Equal(t, []DispatchAgent{{BeadID: "blocked", RigID: rig}}, dispatches(Reconcile(s, Options{}, now)))
}

func TestB1DrainingAndBreaker(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i1")}
	require.Empty(t, Reconcile(s, Options{Draining: true}, now))

	// 19 failed starts in the window: the breaker stays closed; 20 open it.
	mk := func(failures int) *Snapshot {
		s := town()
		s.Beads = []Bead{issue("i1")}
		s.DispatchFailures = failures
		return s
	}
	require.Len(t, dispatches(Reconcile(mk(19), Options{}, now)), 1)
	actions := Reconcile(mk(20), Options{}, now)
	require.Empty(t, dispatches(actions))
	var notices int
	for _, a := range actions {
		if _, ok := a.(NotifyMayor); ok {
			notices++
		}
	}
	require.Equal(t, 1, notices)
}

// The reference counted every non-closed bead dispatched in the last 30 minutes, so 20
// healthy beads in flight paused all dispatch (SPEC.md §9 item 14). We count failures.
func TestBreakerIgnoresHealthyInFlightWork(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("new")}
	for i := range 30 {
		id := string(rune('A' + i))
		s.Beads = append(s.Beads, issue(id, func(b *Bead) {
			b.Status, b.AssigneeID = StatusInProgress, "p"+id
			b.DispatchAttempts, b.LastDispatchAttemptAt, b.UpdatedAt = 1, ago(10*time.Minute), ago(time.Minute)
		}))
		s.Agents = append(s.Agents, Agent{ID: "p" + id, Role: RolePolecat, RigID: rig, Status: AgentWorking, HookBeadID: id, LastActivityAt: ago(10 * time.Second)})
	}
	require.Equal(t, []DispatchAgent{{BeadID: "new", RigID: rig}}, dispatches(Reconcile(s, Options{}, now)))
}

func TestA1HeartbeatLoss(t *testing.T) {
	t.Parallel()
	s := town()
	s.Agents = []Agent{
		{ID: "never", Role: RolePolecat, Status: AgentWorking, HookBeadID: "i1"},
		{ID: "stale", Role: RolePolecat, Status: AgentWorking, HookBeadID: "i2", LastActivityAt: ago(100 * time.Second)},
		{ID: "fresh", Role: RolePolecat, Status: AgentWorking, HookBeadID: "i3", LastActivityAt: ago(30 * time.Second)},
		{ID: "nohook", Role: RolePolecat, Status: AgentWorking, LastActivityAt: ago(30 * time.Second)},
		{ID: "mayor", Role: RoleMayor, Status: AgentWorking},
		{ID: "stalled", Role: RolePolecat, Status: AgentStalled, HookBeadID: "i4", LastActivityAt: ago(time.Hour)},
	}
	s.Beads = []Bead{
		issue("i1", func(b *Bead) { b.Status = StatusInProgress; b.AssigneeID = "never" }),
		issue("i2", func(b *Bead) { b.Status = StatusInProgress; b.AssigneeID = "stale" }),
		issue("i3", func(b *Bead) { b.Status = StatusInProgress; b.AssigneeID = "fresh" }),
		issue("i4", func(b *Bead) { b.Status = StatusInProgress; b.AssigneeID = "stalled" }),
	}
	var idled []string
	for _, a := range Reconcile(s, Options{}, now) {
		if ta, ok := a.(TransitionAgent); ok {
			require.Equal(t, AgentWorking, ta.From)
			require.Equal(t, AgentIdle, ta.To)
			idled = append(idled, ta.AgentID)
		}
	}
	require.Equal(t, []string{"never", "stale", "nohook"}, idled)
	for _, a := range Reconcile(s, Options{Draining: true}, now) {
		require.NotEqual(t, ActTransitionAgent, a.Type(), "A1 is skipped while draining")
	}
}

func TestR5PopsOldestMRCreatingRefinery(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{mr("new", ago(time.Minute)), mr("old", ago(time.Hour))}
	s.Reviews = []Review{{BeadID: "new", Branch: "b1"}, {BeadID: "old", Branch: "b2"}}
	actions := Reconcile(s, Options{}, now)
	require.Equal(t, []Action{
		TransitionBead{BeadID: "old", From: StatusOpen, To: StatusInProgress, Reason: "popped for review (creating refinery)", Actor: "system"},
		DispatchAgent{BeadID: "old", RigID: rig},
	}, actions)
}

func TestR5HooksIdleRefinery(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{mr("m1", ago(time.Minute))}
	s.Reviews = []Review{{BeadID: "m1", Branch: "b"}}
	s.Agents = []Agent{{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentIdle}}
	actions := Reconcile(s, Options{}, now)
	require.Equal(t, []Action{
		TransitionBead{BeadID: "m1", From: StatusOpen, To: StatusInProgress, Reason: "popped for review", Actor: "system"},
		HookAgent{AgentID: "ref", BeadID: "m1"},
		DispatchAgent{AgentID: "ref", BeadID: "m1", RigID: rig},
	}, actions)

	// A busy refinery waits; so does a rig with a direct-merge MR in flight.
	s.Agents[0].Status = AgentWorking
	s.Agents[0].HookBeadID = "other"
	s.Agents[0].LastActivityAt = now
	require.Empty(t, dispatches(Reconcile(s, Options{}, now)))
	s.Agents[0] = Agent{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentIdle}
	s.Beads = append(s.Beads, mr("flying", ago(time.Minute), func(b *Bead) { b.Status = StatusInProgress }))
	s.Reviews = append(s.Reviews, Review{BeadID: "flying", Branch: "f"})
	require.Empty(t, dispatches(Reconcile(s, Options{}, now)))
	// A PR-strategy MR in flight does not block the queue.
	s.Reviews[1].PRURL = "https://github.com/o/r/pull/1"
	require.Len(t, dispatches(Reconcile(s, Options{}, now)), 1)
}

func TestR5OneMRPerRigAndCodeReviewOff(t *testing.T) {
	t.Parallel()
	off := false
	s := town()
	s.Rigs[1].Config.CodeReview = &off
	s.Beads = []Bead{
		mr("a1", ago(3*time.Hour)), mr("a2", ago(2*time.Hour)),
		mr("b-polecat", ago(time.Hour), func(b *Bead) { b.RigID = rig2; b.CreatedBy = "polecat" }),
		mr("b-landing", ago(time.Minute), func(b *Bead) { b.RigID = rig2; b.CreatedBy = CreatedBySystem }),
	}
	s.Reviews = []Review{{BeadID: "a1"}, {BeadID: "a2"}, {BeadID: "b-polecat"}, {BeadID: "b-landing"}}
	got := dispatches(Reconcile(s, Options{}, now))
	require.Equal(t, []DispatchAgent{{BeadID: "a1", RigID: rig}, {BeadID: "b-landing", RigID: rig2}}, got)
}

func TestInvariants(t *testing.T) {
	t.Parallel()
	s := town()
	s.Agents = []Agent{
		{ID: "a1", Role: RolePolecat, Status: AgentWorking},
		{ID: "a2", Role: RolePolecat, Status: AgentIdle, HookBeadID: "i1"},
		{ID: "a3", Role: RolePolecat, Status: AgentIdle, HookBeadID: "i1"},
		{ID: "m", Role: RoleMayor, Status: AgentWorking},
	}
	s.Beads = []Bead{
		issue("i1", func(b *Bead) { b.Status = StatusInReview }),
		mr("m1", now, func(b *Bead) { b.Status = StatusInProgress }),
		mr("m2", now, func(b *Bead) { b.Status = StatusInProgress }),
		mr("m3", now, func(b *Bead) { b.Status = StatusInProgress }),
	}
	s.Reviews = []Review{{BeadID: "m1"}, {BeadID: "m2"}, {BeadID: "m3", PRURL: "https://x/pull/1"}}
	var got []int
	for _, v := range CheckInvariants(s) {
		got = append(got, v.Invariant)
	}
	require.Equal(t, []int{7, 3, 6, 4}, got)
	// Two PR-strategy MRs in flight are fine (only direct merges are serial).
	s.Reviews[1].PRURL = "https://x/pull/2"
	for _, v := range CheckInvariants(s) {
		require.NotEqual(t, 3, v.Invariant)
	}
}

func TestHasActiveWork(t *testing.T) {
	t.Parallel()
	s := town()
	require.False(t, HasActiveWork(s, now))
	s.Beads = []Bead{issue("i1")}
	require.True(t, HasActiveWork(s, now), "open unassigned issue of a rig")
	s.Beads = []Bead{issue("i1", func(b *Bead) { b.Status = StatusClosed })}
	s.Agents = []Agent{{ID: "m", Role: RoleMayor, Status: AgentWaiting}}
	require.False(t, HasActiveWork(s, now), "a waiting mayor is not work")
	s.Agents = []Agent{{ID: "p", Role: RolePolecat, Status: AgentStalled, LastActivityAt: ago(10 * time.Minute)}}
	require.True(t, HasActiveWork(s, now))
	s.Agents[0].LastActivityAt = ago(31 * time.Minute)
	require.False(t, HasActiveWork(s, now))
}

func TestDispatchBackoffSchedule(t *testing.T) {
	t.Parallel()
	want := []time.Duration{30 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for n, w := range want {
		require.Equal(t, w, DispatchBackoff(n), "attempts %d", n)
	}
}
