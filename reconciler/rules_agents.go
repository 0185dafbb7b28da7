package reconciler

// agents is the Agents pass (SPEC.md §4.1).
func (r *run) agents() {
	r.heartbeatLoss()
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
