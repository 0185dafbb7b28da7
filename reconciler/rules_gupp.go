package reconciler

import (
	"strconv"
	"time"
)

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
	warn, escalate, forceStop := r.s.Config.GUPPTiers()
	dedupe := r.s.Config.GUPPNudgeDedupe()
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
		case elapsed > forceStop:
			r.emit(
				TransitionAgent{AgentID: a.ID, From: a.Status, To: AgentStalled, Reason: "GUPP force stop — no SDK activity for " + shortDuration(forceStop)},
				StopAgent{AgentID: a.ID, Reason: "exceeded " + shortDuration(forceStop) + " GUPP limit"},
				CreateTriageRequest{AgentID: a.ID, TriageType: "stuck_agent", Reason: "GUPP force stop", HookedBeadID: a.HookBeadID},
			)
		case elapsed > escalate:
			if r.fresh(r.s.LastNudge(a.ID, NudgeSourceEscalate), dedupe) {
				continue
			}
			r.emit(
				SendNudge{AgentID: a.ID, Tier: TierEscalate, Message: "You have been working for over " + longDuration(escalate) + " without progress. " +
					"Wrap up, call gt_done with what you have, or ask for help."},
				CreateTriageRequest{AgentID: a.ID, TriageType: "stuck_agent", Reason: "GUPP escalation", HookedBeadID: a.HookBeadID},
			)
		case elapsed > warn:
			if len(a.ActiveTools) > 0 || r.fresh(r.s.LastNudge(a.ID, NudgeSourceWarn), dedupe) {
				continue
			}
			r.emit(SendNudge{AgentID: a.ID, Tier: TierWarn, Message: "You have been idle for " + longDuration(warn) + " with no tool activity. " +
				"Continue your task or call gt_done."})
		}
	}
}

// shortDuration writes a GUPP limit as the reference does ("2h"), or as Go writes it.
func shortDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return d.String()
}

// longDuration writes a GUPP threshold in words ("15 minutes", "1 hour"), or as Go writes it.
func longDuration(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return strconv.FormatInt(n, 10) + " " + unit + "s"
	}
	switch {
	case d%time.Hour == 0:
		return plural(int64(d/time.Hour), "hour")
	case d%time.Minute == 0:
		return plural(int64(d/time.Minute), "minute")
	case d%time.Second == 0:
		return plural(int64(d/time.Second), "second")
	}
	return d.String()
}
