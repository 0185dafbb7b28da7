package reconciler

import "time"

// HasActiveWork reports whether the town should tick at the active cadence (SPEC.md §1.5):
// an agent working (or stalled with recent activity), an idle agent with a hook, a live MR,
// an open triage request, or an open unassigned issue of a rig.
func HasActiveWork(s *Snapshot, now time.Time) bool {
	for i := range s.Agents {
		a := &s.Agents[i]
		switch {
		case a.Status == AgentWorking:
			return true
		case a.Status == AgentStalled && !a.LastActivityAt.IsZero() && now.Sub(a.LastActivityAt) <= StalledActivityWindow:
			return true
		case a.Status == AgentIdle && a.HookBeadID != "":
			return true
		}
	}
	for i := range s.Beads {
		b := &s.Beads[i]
		switch {
		case b.Type == BeadMergeRequest && (b.Status == StatusOpen || b.Status == StatusInProgress):
			return true
		case b.Type == BeadIssue && b.Status == StatusOpen && b.HasLabel(LabelTriageRequest):
			return true
		case b.Type == BeadIssue && b.Status == StatusOpen && b.RigID != "" && b.AssigneeID == "":
			return true
		}
	}
	return false
}
