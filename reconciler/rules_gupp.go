package reconciler

// GUPP nudge sources, as recorded on agent_nudges.source.
const (
	NudgeSourceWarn     = "reconciler:" + string(TierWarn)
	NudgeSourceEscalate = "reconciler:" + string(TierEscalate)
)

// gupp is the agent inactivity policy (SPEC.md §4.5): warn after GUPPWarn without SDK
// activity (and no tool running), escalate after GUPPEscalate, force-stop after
// GUPPForceStop. Skipped while draining.
//
// The force-stop fires once, as the agent goes from working to stalled; the reference
// re-emitted it every tick until A2 idled the agent (SPEC.md §9 item 18).
func (r *run) gupp() {
	if r.opts.Draining {
		return
	}
	for i := range r.s.Agents {
		a := &r.s.Agents[i]
		if a.Role == RoleMayor || (a.Status != AgentWorking && a.Status != AgentStalled) || !r.agentFree(a.ID) {
			continue
		}
		activity := a.LastEventAt
		if activity.IsZero() {
			activity = a.LastActivityAt
		}
		if activity.IsZero() {
			continue
		}
		elapsed := r.now.Sub(activity)
		if elapsed < 0 {
			continue
		}
		if a.Status == AgentStalled {
			continue // already force-stopped; A2 idles it after StalledAutoIdle
		}
		switch {
		case elapsed > GUPPForceStop:
			r.emit(
				TransitionAgent{AgentID: a.ID, From: a.Status, To: AgentStalled, Reason: "GUPP force stop — no SDK activity for 2h"},
				StopAgent{AgentID: a.ID, Reason: "exceeded 2h GUPP limit"},
				CreateTriageRequest{AgentID: a.ID, TriageType: "stuck_agent", Reason: "GUPP force stop", HookedBeadID: a.HookBeadID},
			)
		case elapsed > GUPPEscalate:
			if r.fresh(r.s.LastNudge(a.ID, NudgeSourceEscalate), GUPPNudgeDedupe) {
				continue
			}
			r.emit(
				SendNudge{AgentID: a.ID, Tier: TierEscalate, Message: "You have been working for over 1 hour without progress. " +
					"Wrap up, call gt_done with what you have, or ask for help."},
				CreateTriageRequest{AgentID: a.ID, TriageType: "stuck_agent", Reason: "GUPP escalation", HookedBeadID: a.HookBeadID},
			)
		case elapsed > GUPPWarn:
			if len(a.ActiveTools) > 0 || r.fresh(r.s.LastNudge(a.ID, NudgeSourceWarn), GUPPNudgeDedupe) {
				continue
			}
			r.emit(SendNudge{AgentID: a.ID, Tier: TierWarn, Message: "You have been idle for 15 minutes with no tool activity. " +
				"Continue your task or call gt_done."})
		}
	}
}
