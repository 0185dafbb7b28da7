package reconciler

import "slices"

// reviewQueue is the ReviewQueue pass (SPEC.md §4.3).
func (r *run) reviewQueue() {
	r.popReviewQueue()
}

// popReviewQueue is rule R5: for each rig with open MRs and no in_progress direct-merge MR,
// the oldest eligible open MR goes to the rig's refinery (created by the applier when the
// rig has none). At most one MR per rig per tick; skipped while draining or with the
// breaker open.
func (r *run) popReviewQueue() {
	openByRig := make(map[string][]*Bead)
	directInFlight := make(map[string]bool)
	for i := range r.s.Beads {
		b := &r.s.Beads[i]
		if b.Type != BeadMergeRequest || b.RigID == "" {
			continue
		}
		rev := r.s.Review(b.ID)
		if rev == nil {
			continue
		}
		switch b.Status {
		case StatusOpen:
			openByRig[b.RigID] = append(openByRig[b.RigID], b)
		case StatusInProgress:
			if rev.PRURL == "" {
				directInFlight[b.RigID] = true
			}
		}
	}
	rigs := make([]string, 0, len(openByRig))
	for rig := range openByRig {
		rigs = append(rigs, rig)
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
		refinery := r.s.Refinery(rigID)
		switch {
		case refinery == nil:
			r.emit(
				TransitionBead{BeadID: mr.ID, From: StatusOpen, To: StatusInProgress,
					Reason: "popped for review (creating refinery)", Actor: CreatedBySystem},
				DispatchAgent{BeadID: mr.ID, RigID: rigID},
			)
		case refinery.Status != AgentIdle || refinery.HookBeadID != "":
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
