package reconciler

import (
	"fmt"
	"time"
)

// Options are the inputs of Reconcile besides the snapshot and the clock.
type Options struct {
	// Draining suppresses dispatch decisions, heartbeat checks, stalled auto-idle and
	// GUPP (SPEC.md §1.6). Taken from the town row.
	Draining bool
}

// Reconcile evaluates the rule passes in the reference order — Agents, Beads,
// ReviewQueue, Convoys, GUPP, GC — over one snapshot and returns the concatenated
// actions. It reads only s, opts and now.
//
// Unlike the reference (SPEC.md §9 item 12), later rules see what earlier ones decided in
// the same run: an agent or bead that an action already moves is not dispatched, hooked
// or moved elsewhere by a later rule, so no two actions of one tick contradict each other.
func Reconcile(s *Snapshot, opts Options, now time.Time) []Action {
	s.Index()
	// Most actions of a busy town's run are the dispatches of its open issues: room for
	// them up front (a map that grows rehashes what it holds).
	r := &run{s: s, opts: opts, now: now, agentTouched: map[string]bool{}, beadTarget: make(map[string]BeadStatus, len(s.openIssues)),
		actions: make([]Action, 0, len(s.openIssues))}
	r.breakerCount = s.DispatchFailures
	r.breakerOpen = r.breakerCount >= CircuitBreakerThreshold
	r.agents()
	r.beads()
	r.reviewQueue()
	r.convoys()
	r.gupp()
	r.gc()
	return r.actions
}

// run carries one evaluation of the rules.
type run struct {
	s            *Snapshot
	opts         Options
	now          time.Time
	breakerOpen  bool
	breakerCount int
	actions      []Action
	// agentTouched: agents whose status or hook an action of this run changes.
	agentTouched map[string]bool
	// beadTarget: the status an action of this run moves a bead to ("" for an
	// assignment change without a move).
	beadTarget map[string]BeadStatus
}

func (r *run) emit(a ...Action) {
	for _, x := range a {
		switch x := x.(type) {
		case TransitionBead:
			r.beadTarget[x.BeadID] = x.To
		case ClearBeadAssignee:
			if _, ok := r.beadTarget[x.BeadID]; !ok {
				r.beadTarget[x.BeadID] = ""
			}
			for _, ag := range r.s.AgentsHookedTo(x.BeadID) {
				r.agentTouched[ag.ID] = true
			}
		case TransitionAgent:
			r.agentTouched[x.AgentID] = true
		case HookAgent:
			r.agentTouched[x.AgentID] = true
		case UnhookAgent:
			r.agentTouched[x.AgentID] = true
		case DispatchAgent:
			if x.AgentID != "" {
				r.agentTouched[x.AgentID] = true
			}
			if _, ok := r.beadTarget[x.BeadID]; !ok {
				r.beadTarget[x.BeadID] = StatusInProgress
			}
		case StopAgent, DeleteAgent, ResetAgentDispatchAttempts:
			r.agentTouched[agentOf(x)] = true
		}
	}
	r.actions = append(r.actions, a...)
}

func agentOf(a Action) string {
	switch a := a.(type) {
	case StopAgent:
		return a.AgentID
	case DeleteAgent:
		return a.AgentID
	case ResetAgentDispatchAttempts:
		return a.AgentID
	}
	return ""
}

// agentFree reports whether no earlier action of this run changes the agent.
func (r *run) agentFree(id string) bool { return id == "" || !r.agentTouched[id] }

// beadFree reports whether no earlier action of this run moves or reassigns the bead.
func (r *run) beadFree(id string) bool {
	_, ok := r.beadTarget[id]
	return !ok
}

// canMove reports whether a transition of the bead to status to agrees with what earlier
// actions of this run decided (the same target is fine; a different one contradicts).
func (r *run) canMove(id string, to BeadStatus) bool {
	t, ok := r.beadTarget[id]
	return !ok || t == to || t == ""
}

// transition emits transition_bead unless an earlier action moves the bead elsewhere.
func (r *run) transition(b *Bead, to BeadStatus, reason string) bool {
	if !r.canMove(b.ID, to) {
		return false
	}
	r.emit(TransitionBead{BeadID: b.ID, From: b.Status, To: to, Reason: reason, Actor: CreatedBySystem})
	return true
}

// stale reports whether t is unset or older than d at r.now.
func (r *run) stale(t time.Time, d time.Duration) bool {
	return t.IsZero() || r.now.Sub(t) > d
}

// fresh reports whether t is set and at most d old.
func (r *run) fresh(t time.Time, d time.Duration) bool { return !t.IsZero() && r.now.Sub(t) <= d }

// maxAttempts is the effective attempt cap for a rig (town and rig overrides apply to
// every rule, unlike the reference: SPEC.md §9 item 15).
func (r *run) maxAttempts(rigID string) int {
	return EffectiveMaxDispatchAttempts(r.s.Config, r.s.Rig(rigID))
}

// inBackoff reports whether the bead's last dispatch attempt is too recent for another.
func (r *run) inBackoff(b *Bead) bool {
	if b.LastDispatchAttemptAt.IsZero() {
		return false
	}
	return r.now.Sub(b.LastDispatchAttemptAt) < DispatchBackoff(b.DispatchAttempts)
}

func breakerMessage(n int) string {
	return fmt.Sprintf("Dispatch circuit breaker is OPEN: %d dispatch failures in the last 30 minutes. "+
		"Automatic dispatch is paused until failures age out.", n)
}

// metaTime reads a timestamp stored in bead metadata (RFC 3339), or zero.
func metaTime(b *Bead, key string) time.Time {
	s, _ := b.Metadata[key].(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
