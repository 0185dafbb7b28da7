package reconciler_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "gastown/reconciler" //nolint:revive
)

func ofType[T Action](actions []Action) []T {
	var out []T
	for _, a := range actions {
		if x, ok := a.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func polecat(id, hook string, status AgentStatus, last time.Duration) Agent {
	a := Agent{ID: id, Role: RolePolecat, RigID: rig, Status: status, HookBeadID: hook, CreatedAt: ago(48 * time.Hour)}
	if last >= 0 {
		a.LastActivityAt = ago(last)
	}
	return a
}

func TestA1HeartbeatBoundary(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		last time.Duration
		idle bool
	}{{89 * time.Second, false}, {90 * time.Second, false}, {91 * time.Second, true}} {
		s := town()
		s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.AssigneeID, b.UpdatedAt = StatusInProgress, "p", now })}
		s.Agents = []Agent{polecat("p", "i", AgentWorking, c.last)}
		got := ofType[TransitionAgent](Reconcile(s, Options{}, now))
		require.Equal(t, c.idle, len(got) == 1, "heartbeat %s ago", c.last)
	}
}

func TestA2StalledAutoIdle(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.AssigneeID, b.UpdatedAt = StatusInProgress, "p", now })}
	a := polecat("p", "i", AgentStalled, 3*time.Hour)
	a.StalledAt = ago(2*time.Hour + 40*time.Minute)
	s.Agents = []Agent{a}
	actions := Reconcile(s, Options{}, now)
	require.Equal(t, []Action{
		TransitionAgent{AgentID: "p", From: AgentStalled, To: AgentIdle, Reason: "stalled_timeout: stalled for over 2.5h"},
		UnhookAgent{AgentID: "p", ExpectHook: "i", Reason: "stalled_timeout"},
	}, actions, "and GUPP stays silent for it (scenario 15)")
	s.Agents[0].StalledAt = ago(2*time.Hour + 29*time.Minute)
	require.Empty(t, ofType[TransitionAgent](Reconcile(s, Options{}, now)))
	s.Agents[0].StalledAt = time.Time{}
	require.Empty(t, ofType[TransitionAgent](Reconcile(s, Options{}, now)), "null stalled_at is skipped")
}

func TestA3ResetsExhaustedAgents(t *testing.T) {
	t.Parallel()
	s := town()
	a := polecat("p", "", AgentIdle, 31*time.Minute)
	a.DispatchAttempts = 5
	s.Agents = []Agent{a}
	require.Equal(t, []ResetAgentDispatchAttempts{{AgentID: "p"}}, ofType[ResetAgentDispatchAttempts](Reconcile(s, Options{}, now)))
	s.Agents[0].LastActivityAt = ago(29 * time.Minute)
	require.Empty(t, ofType[ResetAgentDispatchAttempts](Reconcile(s, Options{}, now)))
	s.Agents[0].LastActivityAt = time.Time{}
	require.Empty(t, ofType[ResetAgentDispatchAttempts](Reconcile(s, Options{}, now)), "null activity does not match")
	s.Agents[0].LastActivityAt = ago(time.Hour)
	s.Agents[0].DispatchAttempts = 4
	require.Empty(t, ofType[ResetAgentDispatchAttempts](Reconcile(s, Options{}, now)))
}

func TestA4IdleHookedAgents(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{
		issue("done", func(b *Bead) { b.Status = StatusClosed }),
		issue("live", func(b *Bead) { b.Status, b.AssigneeID = StatusInProgress, "stale" }),
		issue("fresh", func(b *Bead) { b.Status, b.AssigneeID = StatusInProgress, "fresh" }),
		issue("review", func(b *Bead) { b.Status = StatusInReview }),
	}
	s.Agents = []Agent{
		polecat("fin", "done", AgentIdle, time.Hour),
		polecat("gone", "missing", AgentIdle, time.Hour),
		polecat("stale", "live", AgentIdle, 100*time.Second),
		polecat("fresh", "fresh", AgentIdle, 30*time.Second),
		polecat("rev", "review", AgentIdle, time.Hour),
	}
	actions := Reconcile(s, Options{}, now)
	unhooked := map[string]bool{}
	for _, u := range ofType[UnhookAgent](actions) {
		unhooked[u.AgentID] = true
	}
	require.Equal(t, map[string]bool{"fin": true, "gone": true, "stale": true}, unhooked)
	require.Len(t, ofType[ClearAgentCheckpoint](actions), 2)
	require.Contains(t, actions, TransitionBead{BeadID: "live", From: StatusInProgress, To: StatusOpen, Reason: "agent went idle without completing work", Actor: "system"})
}

func TestB1bClearsStaleAssignees(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{
		issue("stale", func(b *Bead) { b.AssigneeID = "ghost" }),
		issue("hooked", func(b *Bead) { b.AssigneeID = "p" }),
		issue("system", func(b *Bead) { b.AssigneeID = AssigneeSystem }),
		issue("triage", func(b *Bead) { b.AssigneeID = "ghost"; b.Labels = []string{LabelTriageRequest} }),
	}
	s.Agents = []Agent{polecat("p", "hooked", AgentIdle, 10*time.Second)}
	require.Equal(t, []ClearBeadAssignee{{BeadID: "stale"}}, ofType[ClearBeadAssignee](Reconcile(s, Options{}, now)))
}

func TestB2DispatchesIdleHookedAgents(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i", func(b *Bead) { b.AssigneeID = "p" })}
	s.Agents = []Agent{polecat("p", "i", AgentIdle, 10*time.Second)}
	require.Equal(t, []DispatchAgent{{AgentID: "p", BeadID: "i", RigID: rig}}, dispatches(Reconcile(s, Options{}, now)))
	require.Empty(t, dispatches(Reconcile(s, Options{Draining: true}, now)))

	s.Beads[0].DispatchAttempts = 5
	actions := Reconcile(s, Options{Draining: true}, now)
	require.Equal(t, []Action{
		TransitionBead{BeadID: "i", From: StatusOpen, To: StatusFailed, Reason: "max dispatch attempts exceeded", Actor: "system"},
		UnhookAgent{AgentID: "p", ExpectHook: "i", Reason: "max dispatch attempts"},
	}, actions, "the cap fires even while draining")
}

func TestB3RecoversLostWork(t *testing.T) {
	t.Parallel()
	mk := func(updated time.Duration, agent Agent, attempts int) *Snapshot {
		s := town()
		s.Beads = []Bead{issue("i", func(b *Bead) {
			b.Status, b.AssigneeID, b.UpdatedAt, b.DispatchAttempts = StatusInProgress, "p", ago(updated), attempts
		})}
		s.Agents = []Agent{agent}
		return s
	}
	// Dead agent, 5 min 1 s stale: reopened; the same in draining.
	s := mk(5*time.Minute+time.Second, polecat("p", "i", AgentIdle, 10*time.Minute), 1)
	for _, d := range []bool{false, true} {
		actions := Reconcile(s, Options{Draining: d}, now)
		require.Contains(t, actions, TransitionBead{BeadID: "i", From: StatusInProgress, To: StatusOpen, Reason: "agent lost", Actor: "system"})
		require.Contains(t, actions, ClearBeadAssignee{BeadID: "i"})
	}
	require.Empty(t, ofType[ClearBeadAssignee](Reconcile(mk(4*time.Minute, polecat("p", "i", AgentIdle, 10*time.Minute), 1), Options{}, now)))
	require.Empty(t, ofType[ClearBeadAssignee](Reconcile(mk(time.Hour, polecat("p", "i", AgentWorking, 30*time.Second), 1), Options{}, now)), "a live agent")
	require.Empty(t, ofType[ClearBeadAssignee](Reconcile(mk(time.Hour, polecat("p", "i", AgentIdle, 80*time.Second), 1), Options{}, now)), "a fresh heartbeat")
	// At the cap with no agent left at all: failed. (With an idle agent still hooked, A4
	// reopens the bead first and B1 fails it on the next tick: one move per bead per tick.)
	s = mk(time.Hour, polecat("other", "", AgentIdle, time.Minute), 5)
	actions := Reconcile(s, Options{}, now)
	require.Contains(t, actions, TransitionBead{BeadID: "i", From: StatusInProgress, To: StatusFailed, Reason: "agent lost, max dispatch attempts exhausted", Actor: "system"})
}

func TestB4ResolvesInReview(t *testing.T) {
	t.Parallel()
	mk := func(statuses ...BeadStatus) *Snapshot {
		s := town()
		s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.UpdatedAt = StatusInReview, ago(6*time.Minute) })}
		for n, st := range statuses {
			id := "m" + string(rune('0'+n))
			s.Beads = append(s.Beads, mr(id, ago(time.Hour), func(b *Bead) { b.Status = st }))
			s.Reviews = append(s.Reviews, Review{BeadID: id, PRURL: "https://x/pull/1"})
			s.Dependencies = append(s.Dependencies, Dependency{BeadID: id, DependsOnID: "i", Type: DepTracks})
		}
		return s
	}
	tr := func(s *Snapshot) []TransitionBead {
		var out []TransitionBead
		for _, t := range ofType[TransitionBead](Reconcile(s, Options{}, now)) {
			if t.BeadID == "i" {
				out = append(out, t)
			}
		}
		return out
	}
	require.Empty(t, tr(mk()))
	require.Empty(t, tr(mk(StatusFailed, StatusInProgress)))
	require.Equal(t, StatusClosed, tr(mk(StatusFailed, StatusClosed))[0].To)
	require.Equal(t, StatusOpen, tr(mk(StatusFailed, StatusFailed))[0].To)
}

func prMR(id string, mods ...func(*Bead)) (Bead, Review) {
	return mr(id, ago(time.Hour), append([]func(*Bead){func(b *Bead) { b.Status = StatusInProgress; b.UpdatedAt = ago(time.Minute) }}, mods...)...),
		Review{BeadID: id, Branch: "b", PRURL: "https://github.com/o/r/pull/1"}
}

func TestR1PollsAndMerges(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		last time.Duration
		poll bool
	}{{30 * time.Second, false}, {59 * time.Second, false}, {60 * time.Second, true}, {70 * time.Second, true}, {-1, true}} {
		s := town()
		b, rev := prMR("m", func(b *Bead) {
			b.Metadata = map[string]any{"auto_merge_pending": 1}
			if c.last >= 0 {
				b.Metadata["last_poll_at"] = ago(c.last).Format(time.RFC3339Nano)
			}
		})
		s.Beads, s.Reviews = []Bead{b}, []Review{rev}
		actions := Reconcile(s, Options{}, now)
		require.Equal(t, c.poll, len(ofType[PollPR](actions)) == 1, "last poll %s ago", c.last)
		require.Len(t, ofType[MergePR](actions), 1, "merge_pr every tick while pending")
	}
}

func TestR2R3R4(t *testing.T) {
	t.Parallel()
	direct := func(updated time.Duration) *Snapshot {
		s := town()
		s.Beads = []Bead{mr("m", ago(time.Hour), func(b *Bead) { b.Status, b.UpdatedAt = StatusInProgress, ago(updated) })}
		s.Reviews = []Review{{BeadID: "m", Branch: "b"}}
		return s
	}
	// R3: abandoned after 2 min with no agent.
	require.Empty(t, ofType[TransitionBead](Reconcile(direct(time.Minute), Options{}, now)))
	require.Equal(t, "abandoned, no agent hooked", ofType[TransitionBead](Reconcile(direct(3*time.Minute), Options{}, now))[0].Reason)
	// R2: stuck for 30 min with only an idle agent: reopened and the agent unhooked.
	s := direct(31 * time.Minute)
	s.Agents = []Agent{{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentIdle, HookBeadID: "m", LastActivityAt: ago(30 * time.Second), CreatedAt: ago(time.Hour)}}
	actions := Reconcile(s, Options{}, now)
	require.Equal(t, "stuck review, no working agent", ofType[TransitionBead](actions)[0].Reason)
	require.Contains(t, actions, UnhookAgent{AgentID: "ref", ExpectHook: "m", Reason: "stuck review cleanup"})
	require.Empty(t, dispatches(actions), "R6 does not re-dispatch the refinery R2 just unhooked")
	// Rework blockers hold the MR.
	s = direct(time.Hour)
	s.Beads = append(s.Beads, issue("rework", func(b *Bead) { b.Labels = []string{LabelRework}; b.AssigneeID = "x" }))
	s.Dependencies = []Dependency{{BeadID: "m", DependsOnID: "rework", Type: DepBlocks}}
	for _, tr := range ofType[TransitionBead](Reconcile(s, Options{}, now)) {
		require.NotEqual(t, "m", tr.BeadID)
	}
	// R4: an unpolled PR review fails after 30 min, unless it awaits approval.
	s = town()
	b, rev := prMR("p", func(b *Bead) {
		b.UpdatedAt = ago(31 * time.Minute)
		b.Metadata = map[string]any{"last_poll_at": now.Format(time.RFC3339Nano)}
	})
	s.Beads, s.Reviews = []Bead{b}, []Review{rev}
	require.Equal(t, "PR review orphaned", ofType[TransitionBead](Reconcile(s, Options{}, now))[0].Reason)
	s.Beads[0].Metadata["awaiting_approval"] = 1
	require.Empty(t, ofType[TransitionBead](Reconcile(s, Options{}, now)))
}

func TestRFastTrackAndBabysit(t *testing.T) {
	t.Parallel()
	off := false
	s := town()
	s.Rigs[0].Config.CodeReview = &off
	withPR := mr("pr", ago(time.Hour))
	noPR := mr("nopr", ago(time.Hour), func(b *Bead) { b.CreatedBy = "polecat" })
	landing := mr("landing", ago(time.Hour), func(b *Bead) { b.CreatedBy = CreatedBySystem })
	src := issue("src", func(b *Bead) { b.Status = StatusInReview })
	s.Beads = []Bead{withPR, noPR, landing, src}
	s.Reviews = []Review{{BeadID: "pr", PRURL: "https://x/pull/1"}, {BeadID: "nopr"}, {BeadID: "landing"}}
	s.Dependencies = []Dependency{{BeadID: "nopr", DependsOnID: "src", Type: DepTracks}}
	actions := ofType[TransitionBead](Reconcile(s, Options{}, now))
	require.Contains(t, actions, TransitionBead{BeadID: "pr", From: StatusOpen, To: StatusInProgress, Reason: "refinery code review disabled — skip to poll_pr", Actor: "system"})
	require.Contains(t, actions, TransitionBead{BeadID: "nopr", From: StatusOpen, To: StatusFailed, Reason: "code review disabled and the polecat failed to create PR", Actor: "system"})
	require.Contains(t, actions, TransitionBead{BeadID: "src", From: StatusInReview, To: StatusOpen, Reason: "MR failed (no PR created); back for rework", Actor: "system"})
	require.Contains(t, actions, TransitionBead{BeadID: "landing", From: StatusOpen, To: StatusInProgress, Reason: "popped for review (creating refinery)", Actor: "system"}, "R5 still takes landing MRs")

	s = town()
	baby := mr("baby", ago(time.Hour), func(b *Bead) { b.Metadata = map[string]any{"babysit": true} })
	s.Beads, s.Reviews = []Bead{baby}, []Review{{BeadID: "baby", PRURL: "https://x/pull/2"}}
	actions2 := Reconcile(s, Options{}, now)
	require.Equal(t, []Action{TransitionBead{BeadID: "baby", From: StatusOpen, To: StatusInProgress, Reason: "babysat PR — skip refinery, poll directly", Actor: "system"}}, actions2)
}

func TestR6RedispatchesIdleRefinery(t *testing.T) {
	t.Parallel()
	mk := func(attempts int, last time.Duration) *Snapshot {
		s := town()
		s.Beads = []Bead{mr("m", ago(time.Hour), func(b *Bead) {
			b.Status, b.UpdatedAt, b.DispatchAttempts, b.LastDispatchAttemptAt = StatusInProgress, ago(time.Minute), attempts, ago(last)
		})}
		s.Reviews = []Review{{BeadID: "m", Branch: "b"}}
		s.Agents = []Agent{{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentIdle, HookBeadID: "m", LastActivityAt: ago(30 * time.Second), CreatedAt: ago(time.Hour)}}
		return s
	}
	require.Equal(t, []DispatchAgent{{AgentID: "ref", BeadID: "m", RigID: rig}}, dispatches(Reconcile(mk(2, 61*time.Second), Options{}, now)))
	require.Empty(t, dispatches(Reconcile(mk(2, 59*time.Second), Options{}, now)), "backoff")
	require.Empty(t, dispatches(Reconcile(mk(2, time.Hour), Options{Draining: true}, now)))
	actions := Reconcile(mk(5, time.Hour), Options{}, now)
	require.Contains(t, actions, TransitionBead{BeadID: "m", From: StatusInProgress, To: StatusFailed, Reason: "refinery max dispatch attempts exceeded", Actor: "system"})
	require.Contains(t, actions, UnhookAgent{AgentID: "ref", ExpectHook: "m", Reason: "max dispatch attempts"})
}

// SPEC.md §9 item 12: after a refinery's container exits it is idle with its hook; A4
// (stale heartbeat) unhooks it and reopens the MR, and the reference's R6 then dispatched
// the same refinery onto the same MR in the same tick. Here R6 sees A4's decision.
func TestNoContradictingActionsA4AndR6(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{mr("m", ago(time.Hour), func(b *Bead) { b.Status, b.UpdatedAt = StatusInProgress, ago(time.Minute) })}
	s.Reviews = []Review{{BeadID: "m", Branch: "b"}}
	s.Agents = []Agent{{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentIdle, HookBeadID: "m", LastActivityAt: ago(10 * time.Minute), CreatedAt: ago(time.Hour)}}
	actions := Reconcile(s, Options{}, now)
	require.Contains(t, actions, UnhookAgent{AgentID: "ref", ExpectHook: "m", Reason: "idle agent hooked to live bead (dispatch failed)"})
	require.Empty(t, dispatches(actions), "no dispatch of the refinery A4 unhooked")
	// Each bead moves to one status at most; each agent is changed by one rule at most.
	to := map[string]BeadStatus{}
	for _, tr := range ofType[TransitionBead](actions) {
		if prev, ok := to[tr.BeadID]; ok {
			require.Equal(t, prev, tr.To)
		}
		to[tr.BeadID] = tr.To
	}
}

func TestR7StopsRefineriesOnFinishedMRs(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{mr("m", ago(time.Hour), func(b *Bead) { b.Status = StatusClosed })}
	s.Reviews = []Review{{BeadID: "m"}}
	s.Agents = []Agent{{ID: "ref", Role: RoleRefinery, RigID: rig, Status: AgentWorking, HookBeadID: "m", LastActivityAt: ago(10 * time.Second), CreatedAt: ago(time.Hour)}}
	require.Equal(t, []Action{
		StopAgent{AgentID: "ref", Reason: "MR bead m is closed"},
		TransitionAgent{AgentID: "ref", From: AgentWorking, To: AgentIdle, Reason: "MR finished"},
		UnhookAgent{AgentID: "ref", ExpectHook: "m", Reason: "MR finished"},
	}, Reconcile(s, Options{Draining: true}, now))
}

func convoyTown(mode string, featureBranch string, taskStatus ...BeadStatus) *Snapshot {
	s := town()
	s.Beads = []Bead{{ID: "c", Type: BeadConvoy, Status: StatusOpen, Metadata: map[string]any{}, CreatedAt: ago(time.Hour)}}
	s.Convoys = []Convoy{{BeadID: "c", TotalBeads: len(taskStatus), MergeMode: mode, FeatureBranch: featureBranch}}
	for n, st := range taskStatus {
		id := "t" + string(rune('0'+n))
		s.Beads = append(s.Beads, issue(id, func(b *Bead) { b.Status = st }))
		s.Dependencies = append(s.Dependencies, Dependency{BeadID: id, DependsOnID: "c", Type: DepTracks})
	}
	return s
}

func TestConvoyPass(t *testing.T) {
	t.Parallel()
	// Scenario 14: review-and-merge with all tasks terminal (one failed) closes.
	s := convoyTown(MergeModeAndMerge, "", StatusClosed, StatusFailed)
	s.Convoys[0].ClosedBeads = 2
	require.Equal(t, []Action{CloseConvoy{ConvoyID: "c"}}, Reconcile(s, Options{}, now))
	// Progress is recorded when it changes.
	s = convoyTown(MergeModeThenLand, "convoy/x/1/head", StatusClosed, StatusOpen)
	require.Contains(t, Reconcile(s, Options{}, now), UpdateConvoyProgress{ConvoyID: "c", ClosedBeads: 1})
	// Review-then-land: ready first, then the landing MR, with attempts and cooldown.
	s = convoyTown(MergeModeThenLand, "convoy/x/1/head", StatusClosed, StatusClosed)
	s.Convoys[0].ClosedBeads = 2
	require.Equal(t, []Action{SetConvoyReadyToLand{ConvoyID: "c"}}, Reconcile(s, Options{}, now))
	s.Beads[0].Metadata["ready_to_land"] = 1
	require.Equal(t, []Action{CreateLandingMR{ConvoyID: "c", RigID: rig, FeatureBranch: "convoy/x/1/head", TargetBranch: "main", Attempts: 0}}, Reconcile(s, Options{}, now))
	s.Beads[0].Metadata["landing_mr_attempts"] = 2.0
	s.Beads[0].Metadata["last_landing_mr_attempt_at"] = ago(119 * time.Second).Format(time.RFC3339Nano)
	require.Empty(t, Reconcile(s, Options{}, now), "2^2 × 30 s = 2 min cooldown")
	s.Beads[0].Metadata["last_landing_mr_attempt_at"] = ago(121 * time.Second).Format(time.RFC3339Nano)
	require.Len(t, ofType[CreateLandingMR](Reconcile(s, Options{}, now)), 1)
	s.Beads[0].Metadata["landing_mr_attempts"] = 5.0
	require.Equal(t, []Action{FailConvoy{ConvoyID: "c", Reason: "Landing MR creation failed after 5 attempts"}}, Reconcile(s, Options{}, now))
	// A merged landing MR closes it; one in flight waits.
	s.Beads[0].Metadata["landing_mr_attempts"] = 1.0
	s.Beads = append(s.Beads, mr("land", ago(time.Minute), func(b *Bead) { b.Status = StatusInProgress }))
	s.Reviews = append(s.Reviews, Review{BeadID: "land", PRURL: "https://x/pull/9"})
	s.Dependencies = append(s.Dependencies, Dependency{BeadID: "land", DependsOnID: "c", Type: DepTracks})
	require.Empty(t, ofType[CreateLandingMR](Reconcile(s, Options{}, now)))
	s.Beads[len(s.Beads)-1].Status = StatusClosed
	require.Contains(t, Reconcile(s, Options{}, now), CloseConvoy{ConvoyID: "c"})
}

func TestLandingCooldownCap(t *testing.T) {
	t.Parallel()
	require.Equal(t, time.Minute, LandingCooldown(1))
	require.Equal(t, 16*time.Minute, LandingCooldown(5))
	require.Equal(t, 30*time.Minute, LandingCooldown(6))
	require.Equal(t, 30*time.Minute, LandingCooldown(20))
}

func TestGUPPTiers(t *testing.T) {
	t.Parallel()
	mk := func(since time.Duration, tools []string, nudges ...NudgeRecord) *Snapshot {
		s := town()
		s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.AssigneeID, b.UpdatedAt = StatusInProgress, "p", now })}
		a := polecat("p", "i", AgentWorking, 10*time.Second)
		a.LastEventAt = ago(since)
		a.ActiveTools = tools
		s.Agents = []Agent{a}
		s.Nudges = nudges
		return s
	}
	require.Empty(t, Reconcile(mk(14*time.Minute, nil), Options{}, now))
	warn := Reconcile(mk(16*time.Minute, nil), Options{}, now)
	require.Len(t, warn, 1)
	require.Equal(t, TierWarn, warn[0].(SendNudge).Tier)
	require.Empty(t, Reconcile(mk(16*time.Minute, []string{"bash"}), Options{}, now), "a running tool suppresses the warning")
	require.Empty(t, Reconcile(mk(16*time.Minute, nil, NudgeRecord{AgentID: "p", Source: NudgeSourceWarn, LastAt: ago(59 * time.Minute)}), Options{}, now), "60 min dedupe")
	require.Len(t, Reconcile(mk(16*time.Minute, nil, NudgeRecord{AgentID: "p", Source: NudgeSourceWarn, LastAt: ago(61 * time.Minute)}), Options{}, now), 1)
	esc := Reconcile(mk(61*time.Minute, []string{"bash"}), Options{}, now)
	require.Equal(t, TierEscalate, esc[0].(SendNudge).Tier)
	require.Equal(t, CreateTriageRequest{AgentID: "p", TriageType: "stuck_agent", Reason: "GUPP escalation", HookedBeadID: "i"}, esc[1])
	stop := Reconcile(mk(121*time.Minute, nil), Options{}, now)
	require.Equal(t, []Action{
		TransitionAgent{AgentID: "p", From: AgentWorking, To: AgentStalled, Reason: "GUPP force stop — no SDK activity for 2h"},
		StopAgent{AgentID: "p", Reason: "exceeded 2h GUPP limit"},
		CreateTriageRequest{AgentID: "p", TriageType: "stuck_agent", Reason: "GUPP force stop", HookedBeadID: "i"},
	}, stop)
	require.Empty(t, Reconcile(mk(121*time.Minute, nil), Options{Draining: true}, now), "GUPP is skipped while draining")
}

// SPEC.md §9 item 18: the reference re-emitted the force-stop triple on every tick between
// 2 h and 2.5 h (≈360 stop calls). Once stalled, the agent is left to A2.
func TestGUPPForceStopIsNotRepeated(t *testing.T) {
	t.Parallel()
	s := town()
	s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.AssigneeID, b.UpdatedAt = StatusInProgress, "p", now })}
	a := polecat("p", "i", AgentStalled, 10*time.Second)
	a.LastEventAt, a.StalledAt = ago(2*time.Hour+10*time.Minute), ago(10*time.Minute)
	s.Agents = []Agent{a}
	require.Empty(t, Reconcile(s, Options{}, now))
}

func TestGC(t *testing.T) {
	t.Parallel()
	s := town()
	old := polecat("old", "", AgentIdle, 25*time.Hour)
	recent := polecat("recent", "", AgentIdle, 23*time.Hour)
	newborn := polecat("newborn", "", AgentIdle, -1)
	newborn.CreatedAt = ago(time.Minute)
	ancient := polecat("ancient", "", AgentIdle, -1)
	ancient.CreatedAt = ago(25 * time.Hour)
	mayor := Agent{ID: "mayor", Role: RoleMayor, Status: AgentIdle, CreatedAt: ago(100 * time.Hour)}
	s.Agents = []Agent{old, recent, newborn, ancient, mayor}
	var deleted []string
	for _, d := range ofType[DeleteAgent](Reconcile(s, Options{}, now)) {
		deleted = append(deleted, d.AgentID)
	}
	// The reference deleted "newborn" at once (null activity counted as stale: §9 item 20).
	require.Equal(t, []string{"old", "ancient"}, deleted)
}

func TestMaxDispatchAttemptsOverrideEverywhere(t *testing.T) {
	t.Parallel()
	two := 2
	s := town()
	s.Config.MaxDispatchAttempts = &two
	s.Beads = []Bead{
		issue("b1", func(b *Bead) { b.DispatchAttempts = 2 }),
		issue("b2", func(b *Bead) { b.AssigneeID = "p"; b.DispatchAttempts = 2 }),
		issue("b3", func(b *Bead) {
			b.Status, b.AssigneeID, b.DispatchAttempts, b.UpdatedAt = StatusInProgress, "q", 2, ago(time.Hour)
		}),
	}
	s.Agents = []Agent{polecat("p", "b2", AgentIdle, 10*time.Second)} // b3's agent is gone
	failed := map[string]bool{}
	for _, tr := range ofType[TransitionBead](Reconcile(s, Options{}, now)) {
		if tr.To == StatusFailed {
			failed[tr.BeadID] = true
		}
	}
	require.Equal(t, map[string]bool{"b1": true, "b2": true, "b3": true}, failed, "B1, B2 and B3 all honour the town's cap")
}
