package reconciler_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	. "gastown/reconciler" //nolint:revive
)

// genSnapshot draws a random town: issues and MRs in every status, agents of every role
// and status hooked to random beads, random edges and timestamps around now.
func genSnapshot(t *rapid.T) *Snapshot {
	s := town()
	ts := func(label string) time.Time {
		if rapid.Bool().Draw(t, label+"-null") {
			return time.Time{}
		}
		return now.Add(-time.Duration(rapid.Int64Range(0, int64(30*time.Hour)).Draw(t, label)))
	}
	statuses := []BeadStatus{StatusOpen, StatusInProgress, StatusInReview, StatusClosed, StatusFailed}
	nBeads := rapid.IntRange(0, 12).Draw(t, "beads")
	var ids []string
	for i := range nBeads {
		id := fmt.Sprintf("b%d", i)
		ids = append(ids, id)
		typ := rapid.SampledFrom([]BeadType{BeadIssue, BeadIssue, BeadMergeRequest, BeadConvoy}).Draw(t, "type")
		b := Bead{ID: id, Type: typ, Status: rapid.SampledFrom(statuses).Draw(t, "status"),
			RigID: rapid.SampledFrom([]string{rig, rig2, ""}).Draw(t, "rig"), Metadata: map[string]any{},
			DispatchAttempts: rapid.IntRange(0, 6).Draw(t, "attempts"), LastDispatchAttemptAt: ts("last-dispatch"),
			CreatedAt: ts("created"), UpdatedAt: ts("updated")}
		if rapid.Bool().Draw(t, "labelled") {
			b.Labels = []string{rapid.SampledFrom([]string{LabelHeld, LabelTriageRequest, LabelRework}).Draw(t, "label")}
		}
		switch typ {
		case BeadMergeRequest:
			rev := Review{BeadID: id, Branch: "br"}
			if rapid.Bool().Draw(t, "pr") {
				rev.PRURL = "https://github.com/o/r/pull/" + id
			}
			s.Reviews = append(s.Reviews, rev)
			if rapid.Bool().Draw(t, "pending") {
				b.Metadata["auto_merge_pending"] = 1
			}
		case BeadConvoy:
			s.Convoys = append(s.Convoys, Convoy{BeadID: id, MergeMode: rapid.SampledFrom([]string{MergeModeThenLand, MergeModeAndMerge}).Draw(t, "mode"),
				FeatureBranch: "convoy/x/" + id + "/head", Staged: rapid.Bool().Draw(t, "staged")})
		}
		s.Beads = append(s.Beads, b)
	}
	for i := range rapid.IntRange(0, 6).Draw(t, "agents") {
		a := Agent{ID: fmt.Sprintf("a%d", i), Role: rapid.SampledFrom([]AgentRole{RolePolecat, RolePolecat, RoleRefinery, RoleMayor}).Draw(t, "role"),
			RigID: rig, Status: rapid.SampledFrom([]AgentStatus{AgentIdle, AgentWorking, AgentStalled, AgentWaiting, AgentDead}).Draw(t, "astatus"),
			LastActivityAt: ts("activity"), LastEventAt: ts("event"), StalledAt: ts("stalled"), CreatedAt: ts("acreated"),
			DispatchAttempts: rapid.IntRange(0, 6).Draw(t, "aattempts")}
		if len(ids) > 0 && rapid.Bool().Draw(t, "hooked") {
			a.HookBeadID = rapid.SampledFrom(ids).Draw(t, "hook")
		}
		s.Agents = append(s.Agents, a)
	}
	if len(ids) > 1 {
		for range rapid.IntRange(0, 8).Draw(t, "edges") {
			from, to := rapid.SampledFrom(ids).Draw(t, "from"), rapid.SampledFrom(ids).Draw(t, "to")
			if from != to {
				s.Dependencies = append(s.Dependencies, Dependency{BeadID: from, DependsOnID: to,
					Type: rapid.SampledFrom([]DependencyType{DepBlocks, DepTracks}).Draw(t, "dep")})
			}
		}
	}
	s.DispatchFailures = rapid.IntRange(0, 25).Draw(t, "failures")
	return s
}

func clone(t *rapid.T, s *Snapshot) *Snapshot {
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var c Snapshot
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// Reconcile is a function of its inputs: two runs over equal snapshots emit the same
// actions, in the same order.
func TestPropertyReconcileIsDeterministic(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		draining := rapid.Bool().Draw(t, "draining")
		a := Reconcile(clone(t, s), Options{Draining: draining}, now)
		b := Reconcile(clone(t, s), Options{Draining: draining}, now)
		ea, err := EncodeActions(a)
		require.NoError(t, err)
		eb, err := EncodeActions(b)
		require.NoError(t, err)
		require.Equal(t, ea, eb)
	})
}

// No two actions of one run contradict each other: a bead is moved to one status at most,
// and an agent that one rule unhooks or moves is not dispatched or hooked by another.
func TestPropertyNoContradictions(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		s := genSnapshot(t)
		actions := Reconcile(s, Options{Draining: rapid.Bool().Draw(t, "draining")}, now)
		to := map[string]BeadStatus{}
		changed := map[string]string{}
		for _, a := range actions {
			switch a := a.(type) {
			case TransitionBead:
				if prev, ok := to[a.BeadID]; ok && prev != a.To {
					t.Fatalf("bead %s moved to %s and %s", a.BeadID, prev, a.To)
				}
				to[a.BeadID] = a.To
			case UnhookAgent:
				changed[a.AgentID] = "unhook"
			case DispatchAgent:
				if a.AgentID != "" && changed[a.AgentID] == "unhook" {
					t.Fatalf("agent %s unhooked and dispatched in one run", a.AgentID)
				}
				if st, ok := to[a.BeadID]; ok && st != StatusInProgress {
					t.Fatalf("bead %s moved to %s and dispatched", a.BeadID, st)
				}
			}
		}
	})
}
