package reconciler

// agents is the Agents pass (SPEC.md §4.1).
func (r *run) agents() {
	r.heartbeatLoss()
	r.stalledAutoIdle()
	r.resetExhaustedAgents()
	r.idleHookedAgents()
}

// heartbeatLoss is rule A1: a working agent (not the mayor) whose heartbeat is missing or
// older than HeartbeatStale, or that has no hook, goes idle. Skipped while draining.
func (r *run) heartbeatLoss() {
	if r.opts.Draining {
		return
	}
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Status != AgentWorking || a.Role == RoleMayor {
			continue
		}
		var reason string
		switch {
		case a.LastActivityAt.IsZero():
			reason = "no heartbeat received since dispatch"
		case r.now.Sub(a.LastActivityAt) > HeartbeatStale:
			reason = "heartbeat lost (3 missed cycles)"
		case a.HookBeadID == "":
			reason = "working agent has no hook"
		default:
			continue
		}
		r.emit(TransitionAgent{AgentID: a.ID, From: AgentWorking, To: AgentIdle, Reason: reason})
	}
}

// stalledAutoIdle is rule A2: a stalled agent whose stalled_at is older than
// StalledAutoIdle goes idle and loses its hook. Skipped while draining.
func (r *run) stalledAutoIdle() {
	if r.opts.Draining {
		return
	}
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Status != AgentStalled || a.StalledAt.IsZero() || r.now.Sub(a.StalledAt) <= StalledAutoIdle {
			continue
		}
		r.emit(TransitionAgent{AgentID: a.ID, From: AgentStalled, To: AgentIdle, Reason: "stalled_timeout: stalled for over 2.5h"})
		if a.HookBeadID != "" {
			r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: a.HookBeadID, Reason: "stalled_timeout"})
		}
	}
}

// resetExhaustedAgents is rule A3: an agent at its attempt cap that has been quiet for
// AgentAttemptsResetIdle gets its counters reset, so a town never stays stuck (#1932).
func (r *run) resetExhaustedAgents() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.DispatchAttempts < r.maxAttempts(a.RigID) || a.LastActivityAt.IsZero() ||
			r.now.Sub(a.LastActivityAt) <= AgentAttemptsResetIdle || !r.agentFree(a.ID) {
			continue
		}
		r.emit(ResetAgentDispatchAttempts{AgentID: a.ID})
	}
}

// idleHookedAgents is rule A4: an idle agent hooked to a missing or finished bead is
// unhooked; one hooked to a live bead with a stale heartbeat (a failed dispatch) is
// unhooked and the bead reopened. A fresh heartbeat means the session may be alive.
func (r *run) idleHookedAgents() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Status != AgentIdle || a.HookBeadID == "" || !r.agentFree(a.ID) {
			continue
		}
		b := r.s.Bead(a.HookBeadID)
		switch {
		case b == nil || b.Status.Terminal():
			r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: a.HookBeadID, Reason: "hooked bead is gone or finished"},
				ClearAgentCheckpoint{AgentID: a.ID})
		case b.Status == StatusOpen || b.Status == StatusInProgress:
			if r.fresh(a.LastActivityAt, HeartbeatStale) {
				continue
			}
			r.emit(UnhookAgent{AgentID: a.ID, ExpectHook: b.ID, Reason: "idle agent hooked to live bead (dispatch failed)"})
			r.transition(b, StatusOpen, "agent went idle without completing work")
		}
	}
}
