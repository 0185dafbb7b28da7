package db

import (
	"context"
	"errors"
	"fmt"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// ApplyResult summarises the application of one tick's actions.
type ApplyResult struct {
	Applied int
	// Skipped counts actions whose precondition no longer held when their turn came
	// (DESIGN.md §5 item 2).
	Skipped int
	// SkippedByType breaks Skipped down by action type.
	SkippedByType map[reconciler.ActionType]int
}

// errStale marks an action whose precondition failed: it is skipped, not applied.
type staleError struct{ reason string }

func (e *staleError) Error() string { return "stale action: " + e.reason }

func stale(format string, args ...any) error {
	return &staleError{reason: fmt.Sprintf(format, args...)}
}

// ApplyActions applies a tick's actions in order. Each action first checks its
// precondition against the current state (which earlier actions of the same tick may have
// changed) and is skipped, and counted, when it no longer holds. Errors of the database
// itself abort the tick.
func (t *TownTx) ApplyActions(ctx context.Context, actions []reconciler.Action) (ApplyResult, error) {
	res := ApplyResult{SkippedByType: map[reconciler.ActionType]int{}}
	for _, a := range actions {
		err := t.applyAction(ctx, a)
		var se *staleError
		var me *MissingEntityError
		switch {
		case err == nil:
			res.Applied++
		case errors.As(err, &se), errors.As(err, &me):
			t.logger.Debug("action skipped", "type", a.Type(), "reason", err)
			res.Skipped++
			res.SkippedByType[a.Type()]++
		default:
			return res, fmt.Errorf("apply %s: %w", a.Type(), err)
		}
	}
	return res, nil
}

func (t *TownTx) applyAction(ctx context.Context, a reconciler.Action) error {
	switch a := a.(type) {
	case reconciler.TransitionBead:
		return t.applyTransitionBead(ctx, a)
	case reconciler.ClearBeadAssignee:
		if _, err := t.bead(ctx, a.BeadID); err != nil {
			return err
		}
		return t.clearAssignee(ctx, a.BeadID)
	case reconciler.TransitionAgent:
		ag, err := t.agent(ctx, a.AgentID)
		if err != nil {
			return err
		}
		if a.From != "" && ag.Status != a.From {
			return stale("agent %s is %s, not %s", ag.ID, ag.Status, a.From)
		}
		return t.setAgentStatus(ctx, ag.ID, a.To)
	case reconciler.HookAgent:
		ag, err := t.agent(ctx, a.AgentID)
		if err != nil {
			return err
		}
		b, err := t.bead(ctx, a.BeadID)
		if err != nil {
			return err
		}
		if ag.HookBeadID != "" && ag.HookBeadID != b.ID {
			return stale("agent %s is hooked to %s", ag.ID, ag.HookBeadID)
		}
		if b.Status.Terminal() {
			return stale("bead %s is %s", b.ID, b.Status)
		}
		return t.hookBead(ctx, ag, b)
	case reconciler.UnhookAgent:
		ag, err := t.agent(ctx, a.AgentID)
		if err != nil {
			return err
		}
		if ag.HookBeadID == "" || (a.ExpectHook != "" && ag.HookBeadID != a.ExpectHook) {
			return stale("agent %s hook is %q", ag.ID, ag.HookBeadID)
		}
		return t.unhookBead(ctx, ag)
	case reconciler.DispatchAgent:
		return t.applyDispatch(ctx, a)
	case reconciler.NotifyMayor:
		return t.notifyMayor(ctx, a.Message)
	default:
		return fmt.Errorf("no applier for action %s", a.Type())
	}
}

func (t *TownTx) applyTransitionBead(ctx context.Context, a reconciler.TransitionBead) error {
	b, err := t.bead(ctx, a.BeadID)
	if err != nil {
		return err
	}
	if b.Status == a.To {
		return nil // already there: R2 and R3 may both emit the same move
	}
	if a.From != "" && b.Status != a.From {
		return stale("bead %s is %s, not %s", b.ID, b.Status, a.From)
	}
	if b.Status.Terminal() {
		return stale("bead %s is terminal (%s)", b.ID, b.Status)
	}
	_, err = t.updateBeadStatus(ctx, b, a.To, a.Actor, a.Reason)
	return err
}

// applyDispatch is the synchronous part of dispatch_agent (SPEC.md §5.2, §5.5): resolve
// and hook the agent when none is named, mark agent and bead as dispatched (attempt
// counters, working, in_progress), and request the start as a side effect.
func (t *TownTx) applyDispatch(ctx context.Context, a reconciler.DispatchAgent) error {
	b, err := t.bead(ctx, a.BeadID)
	if err != nil {
		return err
	}
	if b.Status.Terminal() {
		return stale("bead %s is %s", b.ID, b.Status)
	}
	var ag reconciler.Agent
	if a.AgentID == "" {
		if b.AssigneeID != "" {
			return stale("bead %s is already assigned to %s", b.ID, b.AssigneeID)
		}
		role := reconciler.RolePolecat
		if b.Type == reconciler.BeadMergeRequest {
			if b.MetaTruthy("babysit") {
				return stale("babysat MR %s is not dispatched", b.ID)
			}
			role = reconciler.RoleRefinery
		}
		rigID := a.RigID
		if rigID == "" {
			rigID = b.RigID
		}
		if ag, err = t.getOrCreateAgent(ctx, role, rigID); err != nil {
			return err
		}
		if ag.HookBeadID != "" && ag.HookBeadID != b.ID {
			return stale("%s %s is busy with %s", ag.Role, ag.ID, ag.HookBeadID)
		}
		if err := t.hookBead(ctx, ag, b); err != nil {
			return err
		}
	} else {
		if ag, err = t.agent(ctx, a.AgentID); err != nil {
			return err
		}
		if ag.HookBeadID != b.ID {
			return stale("agent %s is not hooked to %s", ag.ID, b.ID)
		}
		if ag.Status != reconciler.AgentIdle {
			return stale("agent %s is %s, not idle", ag.ID, ag.Status)
		}
	}
	if err := t.q.AgentRecordDispatch(ctx, t.db, dbsqlc.AgentRecordDispatchParams{TownID: t.TownID, AgentID: ag.ID, Now: &t.Now}); err != nil {
		return fmt.Errorf("record dispatch of agent %s: %w", ag.ID, err)
	}
	if b.Status != reconciler.StatusInProgress {
		if _, err := t.updateBeadStatus(ctx, b, reconciler.StatusInProgress, reconciler.CreatedBySystem, ""); err != nil {
			return err
		}
	}
	if err := t.q.BeadRecordDispatchAttempt(ctx, t.db, dbsqlc.BeadRecordDispatchAttemptParams{TownID: t.TownID, BeadID: b.ID, Now: &t.Now}); err != nil {
		return fmt.Errorf("record dispatch attempt of bead %s: %w", b.ID, err)
	}
	start := StartAgent{
		AgentID: ag.ID, AgentName: ag.Name, Role: ag.Role, BeadID: b.ID, BeadTitle: b.Title, BeadBody: b.Body, RigID: b.RigID,
	}
	if b.RigID != "" {
		rig, err := t.rig(ctx, b.RigID)
		if err != nil {
			return err
		}
		start.GitURL, start.DefaultBranch = rig.GitURL, rig.DefaultBranch
	}
	if b.Type == reconciler.BeadMergeRequest {
		rev, err := t.q.ReviewGet(ctx, t.db, dbsqlc.ReviewGetParams{TownID: t.TownID, BeadID: b.ID})
		if err != nil {
			return fmt.Errorf("get review metadata of %s: %w", b.ID, interpretError(err))
		}
		start.Branch, start.TargetBranch = rev.Branch, rev.TargetBranch
	}
	t.addSideEffect(start)
	return t.logBeadEvent(ctx, b.ID, ag.ID, "assigned", "", ag.ID, nil)
}

// notifyMayor delivers a message to the town's mayor as a message bead (the reference
// only logged it: SPEC.md §9 item 14). Without a mayor it is logged. An identical open
// message is not sent twice.
func (t *TownTx) notifyMayor(ctx context.Context, message string) error {
	mayor, err := t.q.AgentFindMayor(ctx, t.db, t.TownID)
	if err != nil {
		if errors.Is(interpretError(err), ErrNotFound) {
			t.logger.Warn("notify mayor: town has no mayor", "message", message)
			return nil
		}
		return fmt.Errorf("find mayor: %w", err)
	}
	dup, err := t.q.BeadOpenMessageExists(ctx, t.db, dbsqlc.BeadOpenMessageExistsParams{TownID: t.TownID, Assignee: &mayor.AgentID, Body: &message})
	if err != nil {
		return fmt.Errorf("check mayor messages: %w", err)
	}
	if dup {
		return nil
	}
	id := t.newID()
	return t.q.BeadInsert(ctx, t.db, dbsqlc.BeadInsertParams{
		TownID: t.TownID, BeadID: id, Type: string(reconciler.BeadMessage), Status: string(reconciler.StatusOpen),
		Title: "Reconciler notice", Body: &message, AssigneeAgentBeadID: &mayor.AgentID,
		Priority: string(reconciler.PriorityHigh), Labels: mustJSON([]string{reconciler.LabelMessage, "from:reconciler"}),
		Metadata: []byte("{}"), CreatedBy: ptr(reconciler.CreatedBySystem), Now: t.Now,
	})
}
