package reconciler

// gc is the GC pass (SPEC.md §4.6): an idle (or dead) polecat or refinery without a hook
// and without activity for GCRetention is deleted. An agent that never had activity is
// measured from its creation, so one registered a moment ago is not collected before it
// could work (the reference deleted it on the next tick: SPEC.md §9 item 20).
func (r *run) gc() {
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if (a.Status != AgentIdle && a.Status != AgentDead) || (a.Role != RolePolecat && a.Role != RoleRefinery) ||
			a.HookBeadID != "" || !r.agentFree(a.ID) {
			continue
		}
		last := a.LastActivityAt
		if last.IsZero() {
			last = a.CreatedAt
		}
		if !r.stale(last, GCRetention) {
			continue
		}
		r.emit(DeleteAgent{AgentID: a.ID, Reason: "GC: idle > 24h", ExpectStatus: a.Status})
	}
}
