package reconciler

import (
	"fmt"
	"slices"
)

// beads is the Beads pass (SPEC.md §4.2).
func (r *run) beads() {
	r.dispatchUnassigned()
	r.clearStaleAssignees()
	r.dispatchIdleHooked()
	r.recoverInProgress()
	r.resolveInReview()
	if r.breakerOpen {
		r.emit(NotifyMayor{Message: breakerMessage(r.breakerCount)})
	}
}

// dispatchUnassigned is rule B1: an open, unassigned issue of a rig that is not held, not
// a triage request, not blocked by a live bead and not in a staged convoy is dispatched,
// unless it is inside its backoff window or the breaker is open; at the rig's attempt cap
// it fails instead. Skipped entirely while draining.
func (r *run) dispatchUnassigned() {
	if r.opts.Draining {
		return
	}
	for _, b := range r.s.openIssues {
		if b.AssigneeID != "" || b.RigID == "" ||
			b.HasLabel(LabelTriageRequest) || b.HasLabel(LabelHeld) ||
			r.s.HasOpenBlocker(b.ID) || r.s.InStagedConvoy(b.ID) || !r.beadFree(b.ID) {
			continue
		}
		switch {
		case b.DispatchAttempts >= r.maxAttempts(b.RigID):
			r.transition(b, StatusFailed, fmt.Sprintf("max dispatch attempts exceeded (%d)", b.DispatchAttempts))
		case r.inBackoff(b):
		case r.breakerOpen:
		default:
			r.emit(DispatchAgent{BeadID: b.ID, RigID: b.RigID})
		}
	}
}

// clearStaleAssignees is rule B1b: an open issue of a rig assigned to an agent that is not
// hooked to it loses the assignee (B1 dispatches it on the next tick). System-owned beads
// and triage requests keep theirs.
func (r *run) clearStaleAssignees() {
	for _, b := range r.s.openIssues {
		if b.AssigneeID == "" || b.RigID == "" ||
			b.AssigneeID == AssigneeSystem || b.HasLabel(LabelTriageRequest) || !r.beadFree(b.ID) {
			continue
		}
		if a := r.s.Agent(b.AssigneeID); a != nil && a.HookBeadID == b.ID {
			continue
		}
		r.emit(ClearBeadAssignee{BeadID: b.ID})
	}
}

// dispatchIdleHooked is rule B2: an idle non-refinery agent hooked to an open bead is
// (re)dispatched, within the backoff, blockers, draining and breaker; at the attempt cap
// the bead fails and the agent is unhooked (this check runs even while draining).
func (r *run) dispatchIdleHooked() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Status != AgentIdle || a.HookBeadID == "" || a.Role == RoleRefinery || !r.agentFree(a.ID) {
			continue
		}
		b := r.s.Bead(a.HookBeadID)
		if b == nil || b.Status != StatusOpen || !r.beadFree(b.ID) {
			continue
		}
		rig := b.RigID
		if rig == "" {
			rig = a.RigID
		}
		switch {
		case b.DispatchAttempts >= r.maxAttempts(rig):
			r.transition(b, StatusFailed, "max dispatch attempts exceeded")
			r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: b.ID, Reason: "max dispatch attempts"})
		case r.inBackoff(b), r.s.HasOpenBlocker(b.ID), r.opts.Draining, r.breakerOpen:
		default:
			r.emit(DispatchAgent{AgentID: a.ID, BeadID: b.ID, RigID: rig})
		}
	}
}

// recoverInProgress is rule B3: an issue in progress for StaleInProgress with no live
// agent (hooked and working/stalled, or with a fresh heartbeat) goes back to open, or
// fails at the attempt cap. Not gated by draining.
func (r *run) recoverInProgress() {
	for _, b := range r.s.inProgressIssues {
		if !r.stale(b.UpdatedAt, StaleInProgress) {
			continue
		}
		alive := slices.ContainsFunc(r.s.AgentsHookedTo(b.ID), func(a *Agent) bool {
			return a.Status == AgentWorking || a.Status == AgentStalled || r.fresh(a.LastActivityAt, HeartbeatStale)
		})
		if alive {
			continue
		}
		to, reason := StatusOpen, "agent lost"
		if b.DispatchAttempts >= r.maxAttempts(b.RigID) {
			to, reason = StatusFailed, "agent lost, max dispatch attempts exhausted"
		}
		if r.transition(b, to, reason) {
			r.emit(ClearBeadAssignee{BeadID: b.ID})
		}
	}
}

// resolveInReview is rule B4: an issue in review for OrphanedSource whose MRs are all
// finished closes if one merged, else goes back to open for rework.
func (r *run) resolveInReview() {
	for _, b := range r.s.inReviewIssues {
		if !r.stale(b.UpdatedAt, OrphanedSource) {
			continue
		}
		var mrs []*Bead
		for _, id := range r.s.TrackedBy(b.ID) {
			if m := r.s.Bead(id); m != nil && m.Type == BeadMergeRequest {
				mrs = append(mrs, m)
			}
		}
		if len(mrs) == 0 || slices.ContainsFunc(mrs, func(m *Bead) bool { return !m.Status.Terminal() }) {
			continue
		}
		if slices.ContainsFunc(mrs, func(m *Bead) bool { return m.Status == StatusClosed }) {
			r.transition(b, StatusClosed, "MR merged (reconciler safety net)")
			continue
		}
		if r.transition(b, StatusOpen, "all reviews failed") {
			r.emit(ClearBeadAssignee{BeadID: b.ID})
		}
	}
}
