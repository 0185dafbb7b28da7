package reconciler

import (
	"math"
	"slices"
	"time"
)

// convoys is the Convoys pass (SPEC.md §4.4): progress, ready-to-land, the landing MR with
// its attempts and cooldown, and closing.
func (r *run) convoys() {
	for _, cb := range r.s.convoyBeads {
		c := r.s.Convoy(cb.ID)
		if cb.Status != StatusOpen || c == nil || !r.beadFree(cb.ID) {
			continue
		}
		r.convoy(cb, c)
	}
}

func (r *run) convoy(cb *Bead, c *Convoy) {
	var total, terminal, inFlight int
	rigID := ""
	for _, id := range r.s.TrackedBy(cb.ID) {
		t := r.s.Bead(id)
		if t == nil || t.Type != BeadIssue {
			continue
		}
		total++
		if t.Status.Terminal() {
			terminal++
		}
		if rigID == "" {
			rigID = t.RigID
		}
		for _, mid := range r.s.TrackedBy(t.ID) {
			if m := r.s.Bead(mid); m != nil && m.Type == BeadMergeRequest && (m.Status == StatusOpen || m.Status == StatusInProgress) {
				inFlight++
			}
		}
	}
	if terminal != c.ClosedBeads {
		r.emit(UpdateConvoyProgress{ConvoyID: cb.ID, ClosedBeads: terminal})
	}
	if total == 0 || terminal < total || inFlight > 0 {
		return
	}
	if c.MergeMode == MergeModeAndMerge || c.FeatureBranch == "" {
		r.emit(CloseConvoy{ConvoyID: cb.ID})
		return
	}
	if !cb.MetaTruthy("ready_to_land") {
		r.emit(SetConvoyReadyToLand{ConvoyID: cb.ID})
		return
	}
	var landing []*Bead
	for _, id := range r.s.TrackedBy(cb.ID) {
		if m := r.s.Bead(id); m != nil && m.Type == BeadMergeRequest {
			landing = append(landing, m)
		}
	}
	attempts := cb.MetaInt("landing_mr_attempts")
	switch {
	case slices.ContainsFunc(landing, func(m *Bead) bool { return m.Status == StatusClosed }):
		r.emit(CloseConvoy{ConvoyID: cb.ID})
	case slices.ContainsFunc(landing, func(m *Bead) bool { return m.Status == StatusOpen || m.Status == StatusInProgress }):
		// the landing MR is under way
	case slices.ContainsFunc(landing, func(m *Bead) bool { return m.Status == StatusFailed && m.MetaTruthy("awaiting_approval") }):
		r.emit(EmitEvent{Name: "reconciler.respawn_suppressed", Data: map[string]any{"convoyId": cb.ID, "suppressedAttempt": attempts + 1}})
	case attempts >= MaxLandingMRAttempts:
		r.emit(FailConvoy{ConvoyID: cb.ID, Reason: "Landing MR creation failed after 5 attempts"})
	case attempts > 0 && r.now.Sub(metaTime(cb, "last_landing_mr_attempt_at")) < LandingCooldown(attempts):
		// cooling down
	case rigID == "":
	default:
		target := "main"
		if rig := r.s.Rig(rigID); rig != nil && rig.DefaultBranch != "" {
			target = rig.DefaultBranch
		}
		r.emit(CreateLandingMR{ConvoyID: cb.ID, RigID: rigID, FeatureBranch: c.FeatureBranch, TargetBranch: target, Attempts: attempts})
	}
}

// LandingCooldown is how long a convoy waits after its n-th landing attempt:
// min(2^n × LandingMRCooldownBase, LandingMRCooldownMax).
func LandingCooldown(attempts int) time.Duration {
	d := time.Duration(math.Pow(2, float64(attempts))) * LandingMRCooldownBase
	return min(d, LandingMRCooldownMax)
}
