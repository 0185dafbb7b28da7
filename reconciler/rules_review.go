package reconciler

import (
	"fmt"
	"slices"
)

// reviewQueue is the ReviewQueue pass (SPEC.md §4.3).
func (r *run) reviewQueue() {
	for _, mr := range r.s.mergeRequests {
		rev := r.s.Review(mr.ID)
		if rev == nil || mr.Status != StatusInProgress {
			continue
		}
		r.reviewInProgress(mr, rev)
	}
	r.fastTrack()
	r.babysat()
	r.popReviewQueue()
	r.redispatchRefineries()
	r.stopFinishedRefineries()
}

func (r *run) workingAgentHooked(beadID string) bool {
	return slices.ContainsFunc(r.s.AgentsHookedTo(beadID), func(a *Agent) bool {
		return a.Status == AgentWorking || a.Status == AgentStalled
	})
}

// reviewInProgress is rules R1–R4 for one in_progress MR.
func (r *run) reviewInProgress(mr *Bead, rev *Review) {
	if rev.PRURL != "" {
		// R1: poll the PR at most every PRPollInterval (or the town's timing); merge while a merge is pending.
		if r.stale(metaTime(mr, "last_poll_at"), r.s.Config.PRPollEvery()-1) {
			r.emit(PollPR{BeadID: mr.ID, PRURL: rev.PRURL})
		}
		if mr.MetaTruthy("auto_merge_pending") {
			r.emit(MergePR{BeadID: mr.ID, PRURL: rev.PRURL})
		}
		// R4: a PR review nobody polls or works on any more fails.
		if mr.RigID != "" && EffectiveCodeReview(r.s.Config, r.s.Rig(mr.RigID)) &&
			r.stale(mr.UpdatedAt, OrphanedPRReview) && !mr.MetaTruthy("awaiting_approval") && !r.workingAgentHooked(mr.ID) {
			r.transition(mr, StatusFailed, "PR review orphaned")
		}
		return
	}
	// R2/R3: a direct-merge review stuck without a working agent, or abandoned by every
	// agent, goes back to the queue — unless rework blocks it.
	if r.stale(mr.UpdatedAt, StuckReview) {
		if r.s.HasOpenBlocker(mr.ID) {
			return
		}
		if !r.workingAgentHooked(mr.ID) && r.transition(mr, StatusOpen, "stuck review, no working agent") {
			for _, a := range r.s.AgentsHookedTo(mr.ID) {
				if a.Status == AgentIdle && r.agentFree(a.ID) {
					r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: mr.ID, Reason: "stuck review cleanup"})
				}
			}
		}
	}
	if r.stale(mr.UpdatedAt, AbandonedMR) {
		if r.s.HasOpenBlocker(mr.ID) {
			return
		}
		if len(r.s.AgentsHookedTo(mr.ID)) == 0 {
			r.transition(mr, StatusOpen, "abandoned, no agent hooked")
		}
	}
}

// fastTrack is rule R-FT: for a rig with code review off, open PR MRs skip the refinery
// and go straight to polling; open MRs without a PR (other than landing MRs) fail, and
// their source goes back to open.
func (r *run) fastTrack() {
	for _, mr := range r.s.mergeRequests {
		rev := r.s.Review(mr.ID)
		if rev == nil || mr.Status != StatusOpen || mr.RigID == "" ||
			EffectiveCodeReview(r.s.Config, r.s.Rig(mr.RigID)) || r.inReviewAndMergeConvoy(mr) {
			continue
		}
		if rev.PRURL != "" {
			r.transition(mr, StatusInProgress, "refinery code review disabled — skip to poll_pr")
			continue
		}
		if mr.CreatedBy == CreatedBySystem {
			continue // landing MRs go to the refinery, which opens their PR
		}
		if r.transition(mr, StatusFailed, "code review disabled and the polecat failed to create PR") {
			for _, id := range r.s.Tracks(mr.ID) {
				if src := r.s.Bead(id); src != nil && src.Status == StatusInReview {
					r.transition(src, StatusOpen, "MR failed (no PR created); back for rework")
				}
			}
		}
	}
}

// babysat is rule R-BS: an adopted external PR (metadata babysit) skips the refinery.
func (r *run) babysat() {
	for _, mr := range r.s.mergeRequests {
		if rev := r.s.Review(mr.ID); rev != nil && mr.Status == StatusOpen && rev.PRURL != "" && mr.MetaTruthy("babysit") {
			r.transition(mr, StatusInProgress, "babysat PR — skip refinery, poll directly")
		}
	}
}

// popReviewQueue is rule R5: for each rig with open MRs and no in_progress direct-merge MR,
// the oldest eligible open MR goes to the rig's refinery (created by the applier when the
// rig has none). At most one MR per rig per tick; skipped while draining or with the
// breaker open.
func (r *run) popReviewQueue() {
	openByRig := make(map[string][]*Bead)
	directInFlight := make(map[string]bool)
	var rigs []string
	for _, b := range r.s.mergeRequests {
		if b.RigID == "" {
			continue
		}
		rev := r.s.Review(b.ID)
		if rev == nil {
			continue
		}
		switch {
		case b.Status == StatusOpen && r.beadFree(b.ID):
			if len(openByRig[b.RigID]) == 0 {
				rigs = append(rigs, b.RigID)
			}
			openByRig[b.RigID] = append(openByRig[b.RigID], b)
		case b.Status == StatusInProgress && rev.PRURL == "" && r.canMove(b.ID, StatusInProgress):
			directInFlight[b.RigID] = true
		}
	}
	slices.Sort(rigs) // deterministic action order
	for _, rigID := range rigs {
		if directInFlight[rigID] || r.opts.Draining || r.breakerOpen {
			continue
		}
		mr := r.oldestPoppable(rigID, openByRig[rigID])
		if mr == nil {
			continue
		}
		// The reference popped an MR however often its review had failed to start, so a
		// refinery that never came up was dispatched forever; the attempt cap and backoff
		// of B1 apply here too.
		if mr.DispatchAttempts >= r.maxAttempts(rigID) {
			r.transition(mr, StatusFailed, fmt.Sprintf("max dispatch attempts exceeded (%d)", mr.DispatchAttempts))
			continue
		}
		if r.inBackoff(mr) {
			continue
		}
		refinery := r.s.Refinery(rigID)
		switch {
		case refinery == nil:
			r.emit(
				TransitionBead{BeadID: mr.ID, From: StatusOpen, To: StatusInProgress,
					Reason: "popped for review (creating refinery)", Actor: CreatedBySystem},
				DispatchAgent{BeadID: mr.ID, RigID: rigID},
			)
		case refinery.Status != AgentIdle || refinery.HookBeadID != "" || !r.agentFree(refinery.ID):
		default:
			r.emit(
				TransitionBead{BeadID: mr.ID, From: StatusOpen, To: StatusInProgress,
					Reason: "popped for review", Actor: CreatedBySystem},
				HookAgent{AgentID: refinery.ID, BeadID: mr.ID},
				DispatchAgent{AgentID: refinery.ID, BeadID: mr.ID, RigID: rigID},
			)
		}
	}
}

// oldestPoppable returns the oldest open MR of the rig the refinery may take: babysat MRs
// are excluded, and with code review off only landing MRs (created by system) and MRs of
// review-and-merge convoys qualify.
func (r *run) oldestPoppable(rigID string, mrs []*Bead) *Bead {
	codeReview := EffectiveCodeReview(r.s.Config, r.s.Rig(rigID))
	var oldest *Bead
	for _, mr := range mrs {
		if mr.MetaTruthy("babysit") {
			continue
		}
		if !codeReview && mr.CreatedBy != CreatedBySystem && !r.inReviewAndMergeConvoy(mr) {
			continue
		}
		if oldest == nil || mr.CreatedAt.Before(oldest.CreatedAt) ||
			(mr.CreatedAt.Equal(oldest.CreatedAt) && mr.ID < oldest.ID) {
			oldest = mr
		}
	}
	return oldest
}

// inReviewAndMergeConvoy reports whether the MR's source belongs to a review-and-merge
// convoy. (The reference keyed this on the MR's parent, which is never set: SPEC.md §9
// item 16; we follow the MR's tracks edge to its source and the source's to its convoy.)
func (r *run) inReviewAndMergeConvoy(mr *Bead) bool {
	for _, src := range r.s.Tracks(mr.ID) {
		for _, conv := range r.s.Tracks(src) {
			if c := r.s.Convoy(conv); c != nil && c.MergeMode == MergeModeAndMerge {
				return true
			}
		}
	}
	return false
}

// redispatchRefineries is rule R6: an idle refinery still hooked to an in_progress MR is
// dispatched again, with backoff, unless the PR awaits approval; at the rig's attempt cap
// the MR fails and the refinery is unhooked.
func (r *run) redispatchRefineries() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Role != RoleRefinery || a.Status != AgentIdle || a.HookBeadID == "" || !r.agentFree(a.ID) {
			continue
		}
		mr := r.s.Bead(a.HookBeadID)
		if mr == nil || mr.Type != BeadMergeRequest || mr.Status != StatusInProgress || !r.beadFree(mr.ID) ||
			mr.MetaTruthy("awaiting_approval") || r.opts.Draining {
			continue
		}
		switch {
		case mr.DispatchAttempts >= r.maxAttempts(mr.RigID):
			r.transition(mr, StatusFailed, "refinery max dispatch attempts exceeded")
			r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: mr.ID, Reason: "max dispatch attempts"})
		case r.inBackoff(mr), r.breakerOpen:
		default:
			r.emit(DispatchAgent{AgentID: a.ID, BeadID: mr.ID, RigID: mr.RigID})
		}
	}
}

// stopFinishedRefineries is rule R7: a refinery still working on an MR that closed or
// failed (e.g. auto-merged meanwhile) is stopped, unhooked and set idle. Not gated by
// draining.
func (r *run) stopFinishedRefineries() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Role != RoleRefinery || (a.Status != AgentWorking && a.Status != AgentStalled) || a.HookBeadID == "" || !r.agentFree(a.ID) {
			continue
		}
		mr := r.s.Bead(a.HookBeadID)
		if mr == nil || !mr.Status.Terminal() {
			continue
		}
		r.emit(
			StopAgent{AgentID: a.ID, Reason: "MR bead " + mr.ID + " is " + string(mr.Status)},
			TransitionAgent{AgentID: a.ID, From: a.Status, To: AgentIdle, Reason: "MR finished"},
			UnhookAgent{AgentID: a.ID, ExpectHook: mr.ID, Reason: "MR finished"},
		)
	}
}
