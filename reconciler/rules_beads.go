package reconciler

import "fmt"

// beads is the Beads pass (SPEC.md §4.2).
func (r *run) beads() {
	r.dispatchUnassigned()
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
	for i := range r.s.Beads {
		b := &r.s.Beads[i]
		if b.Type != BeadIssue || b.Status != StatusOpen || b.AssigneeID != "" || b.RigID == "" ||
			b.HasLabel(LabelTriageRequest) || b.HasLabel(LabelHeld) ||
			r.s.HasOpenBlocker(b.ID) || r.s.InStagedConvoy(b.ID) {
			continue
		}
		maxAttempts := EffectiveMaxDispatchAttempts(r.s.Config, r.s.Rig(b.RigID))
		switch {
		case b.DispatchAttempts >= maxAttempts:
			r.emit(TransitionBead{BeadID: b.ID, From: StatusOpen, To: StatusFailed,
				Reason: fmt.Sprintf("max dispatch attempts exceeded (%d)", b.DispatchAttempts), Actor: CreatedBySystem})
		case r.inBackoff(b):
		case r.breakerOpen:
		default:
			r.emit(DispatchAgent{BeadID: b.ID, RigID: b.RigID})
		}
	}
}

// inBackoff reports whether the bead's last dispatch attempt is too recent for another.
func (r *run) inBackoff(b *Bead) bool {
	if b.LastDispatchAttemptAt.IsZero() {
		return false
	}
	return r.now.Sub(b.LastDispatchAttemptAt) < DispatchBackoff(b.DispatchAttempts)
}
