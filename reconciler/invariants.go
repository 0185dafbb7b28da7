package reconciler

import (
	"fmt"
	"slices"
)

// Violation is one broken invariant (SPEC.md §6) about one subject.
type Violation struct {
	Invariant int    `json:"invariant"`
	SubjectID string `json:"subject_id"`
	Message   string `json:"message"`
}

// CheckInvariants evaluates invariants #7, #5, #3, #6 and #4, in that order, over a
// snapshot taken after the tick's actions were applied.
func CheckInvariants(s *Snapshot) []Violation {
	s.Index()
	var out []Violation
	// #7 working agents must have hooks.
	for i := range s.Agents {
		a := &s.Agents[i]
		if a.Status == AgentWorking && a.HookBeadID == "" && a.Role != RoleMayor {
			out = append(out, Violation{7, a.ID, fmt.Sprintf("Working agent %s has no hook", a.ID)})
		}
	}
	// #5 convoy status sanity.
	for _, b := range s.convoyBeads {
		if !b.Status.Valid() {
			out = append(out, Violation{5, b.ID, fmt.Sprintf("Convoy %s has invalid status %q", b.ID, b.Status)})
		}
	}
	// #3 at most one in_progress direct-merge MR per rig (PR-strategy MRs run in
	// parallel by design: SPEC.md §9 item 13).
	direct := make(map[string]int)
	for _, b := range s.mergeRequests {
		if b.Status == StatusInProgress && b.RigID != "" {
			if rev := s.Review(b.ID); rev == nil || rev.PRURL == "" {
				direct[b.RigID]++
			}
		}
	}
	rigs := make([]string, 0, len(direct))
	for rig, n := range direct {
		if n > 1 {
			rigs = append(rigs, rig)
		}
	}
	slices.Sort(rigs)
	for _, rig := range rigs {
		out = append(out, Violation{3, rig,
			fmt.Sprintf("Rig %s has %d in_progress direct-merge MRs (max 1)", rig, direct[rig])})
	}
	// #6 at most one agent per hook.
	hooks := make([]string, 0)
	for bead, agents := range s.agentsByHook {
		if len(agents) > 1 {
			hooks = append(hooks, bead)
		}
	}
	slices.Sort(hooks)
	for _, bead := range hooks {
		out = append(out, Violation{6, bead,
			fmt.Sprintf("Bead %s is hooked by %d agents", bead, len(s.agentsByHook[bead]))})
	}
	// #4 in_review issues need a live MR.
	for _, b := range s.inReviewIssues {
		live := slices.ContainsFunc(s.TrackedBy(b.ID), func(id string) bool {
			mr := s.Bead(id)
			return mr != nil && mr.Type == BeadMergeRequest &&
				(mr.Status == StatusOpen || mr.Status == StatusInProgress)
		})
		if !live {
			out = append(out, Violation{4, b.ID, fmt.Sprintf("In-review issue %s has no open or in_progress MR", b.ID)})
		}
	}
	return out
}
