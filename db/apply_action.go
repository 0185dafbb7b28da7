package db

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	// Failed counts the skipped actions whose statements failed (not a stale precondition).
	Failed int
}

// errStale marks an action whose precondition failed: it is skipped, not applied.
type staleError struct{ reason string }

func (e *staleError) Error() string { return "stale action: " + e.reason }

func stale(format string, args ...any) error {
	return &staleError{reason: fmt.Sprintf(format, args...)}
}

// ApplyActions applies a tick's actions in order, each in a savepoint of its own. Each
// action first checks its precondition against the current state (which earlier actions
// of the same tick may have changed) and is skipped, and counted, when it no longer holds.
// An action whose statements fail (a constraint, a bug) is rolled back alone, logged and
// counted as skipped: one bad action never stops a town from ticking. Only a failure of
// the transaction itself aborts the tick.
func (t *TownTx) ApplyActions(ctx context.Context, actions []reconciler.Action) (res ApplyResult, err error) {
	defer t.flushOnReturn(ctx, &err)
	res = ApplyResult{SkippedByType: map[reconciler.ActionType]int{}}
	for _, a := range actions {
		sp, err := t.beginSavepoint(ctx)
		if err != nil {
			return res, fmt.Errorf("savepoint for %s: %w", a.Type(), err)
		}
		effects := len(t.sideEffects)
		err = t.endSavepointScope(ctx, t.applyAction(ctx, a))
		var se *staleError
		var me *MissingEntityError
		if err == nil {
			if err := sp.Commit(ctx); err != nil {
				return res, fmt.Errorf("release savepoint of %s: %w", a.Type(), err)
			}
			res.Applied++
			continue
		}
		t.sideEffects = t.sideEffects[:effects]
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return res, fmt.Errorf("apply %s: %w (and its rollback: %w)", a.Type(), err, rbErr)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if errors.As(err, &se) || errors.As(err, &me) {
			t.logger.Debug("action skipped", "type", a.Type(), "reason", err)
		} else {
			t.logger.Error("action failed; rolled back alone", "type", a.Type(), "error", err)
			res.Failed++
		}
		res.Skipped++
		res.SkippedByType[a.Type()]++
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
	case reconciler.AssignBead:
		b, err := t.bead(ctx, a.BeadID)
		if err != nil {
			return err
		}
		if b.Status.Terminal() {
			return stale("bead %s is %s", b.ID, b.Status)
		}
		return t.q.BeadSetAssignee(ctx, t.db, dbsqlc.BeadSetAssigneeParams{TownID: t.TownID, BeadID: b.ID, Assignee: &a.AgentID, Now: t.Now})
	case reconciler.CreateMRBead:
		src, err := t.bead(ctx, a.SourceBeadID)
		if err != nil {
			return err
		}
		if a.RigID != "" {
			src.RigID = a.RigID
		}
		_, err = t.submitToReviewQueue(ctx, a.AgentID, src, reconciler.AgentDonePayload{Branch: a.Branch, PRURL: a.PRURL, Summary: a.Summary})
		return err
	case reconciler.CreateLandingMR:
		return t.applyCreateLandingMR(ctx, a)
	case reconciler.CloseSiblingMRs:
		mrs, err := t.trackers(ctx, a.SourceBeadID)
		if err != nil {
			return err
		}
		for _, mr := range mrs {
			if mr.Type == reconciler.BeadMergeRequest && mr.ID != a.ExcludeMRID && !mr.Status.Terminal() {
				if _, err := t.updateBeadStatus(ctx, mr, reconciler.StatusClosed, reconciler.CreatedBySystem, ""); err != nil {
					return err
				}
			}
		}
		return nil
	case reconciler.SetReviewPRURL:
		if !strings.HasPrefix(a.PRURL, "https://") {
			return stale("PR URL %q is not https", a.PRURL)
		}
		if _, err := t.bead(ctx, a.BeadID); err != nil {
			return err
		}
		if err := t.q.ReviewSetPRURL(ctx, t.db, dbsqlc.ReviewSetPRURLParams{TownID: t.TownID, BeadID: a.BeadID, PrUrl: &a.PRURL}); err != nil {
			return fmt.Errorf("set PR URL: %w", err)
		}
		return t.mergeMetadata(ctx, a.BeadID, map[string]any{"pr_url": a.PRURL})
	case reconciler.ResetAgentDispatchAttempts:
		return t.applyResetAgent(ctx, a.AgentID)
	case reconciler.ClearAgentCheckpoint:
		if _, err := t.agent(ctx, a.AgentID); err != nil {
			return err
		}
		return t.q.AgentClearCheckpoint(ctx, t.db, dbsqlc.AgentClearCheckpointParams{TownID: t.TownID, AgentID: a.AgentID})
	case reconciler.DeleteAgent:
		ag, err := t.agent(ctx, a.AgentID)
		if err != nil {
			return err
		}
		if (a.ExpectStatus != "" && ag.Status != a.ExpectStatus) || ag.HookBeadID != "" {
			return stale("agent %s is %s (hook %q)", ag.ID, ag.Status, ag.HookBeadID)
		}
		t.logger.Info("deleting agent", "agent_id", ag.ID, "reason", a.Reason)
		return t.deleteAgent(ctx, ag.ID)
	case reconciler.UpdateConvoyProgress:
		if _, err := t.bead(ctx, a.ConvoyID); err != nil {
			return err
		}
		return t.q.ConvoySetClosedBeads(ctx, t.db, dbsqlc.ConvoySetClosedBeadsParams{TownID: t.TownID, BeadID: a.ConvoyID, ClosedBeads: int32(a.ClosedBeads)})
	case reconciler.SetConvoyReadyToLand:
		c, err := t.openConvoy(ctx, a.ConvoyID)
		if err != nil {
			return err
		}
		return t.mergeMetadata(ctx, c.ID, map[string]any{"ready_to_land": 1})
	case reconciler.CloseConvoy:
		c, err := t.openConvoy(ctx, a.ConvoyID)
		if err != nil {
			return err
		}
		return t.closeConvoy(ctx, c)
	case reconciler.FailConvoy:
		c, err := t.openConvoy(ctx, a.ConvoyID)
		if err != nil {
			return err
		}
		if _, err := t.updateBeadStatus(ctx, c, reconciler.StatusFailed, reconciler.CreatedBySystem, a.Reason); err != nil {
			return err
		}
		return t.mergeMetadata(ctx, c.ID, map[string]any{"failureReason": "landing_mr_exhausted", "failureMessage": a.Reason})
	case reconciler.StopAgent:
		if _, err := t.agent(ctx, a.AgentID); err != nil {
			return err
		}
		t.addSideEffect(StopAgentEffect{AgentID: a.AgentID, Reason: a.Reason})
		return nil
	case reconciler.PollPR:
		return t.applyPollPR(ctx, a)
	case reconciler.MergePR:
		return t.applyMergePR(ctx, a)
	case reconciler.SendNudge:
		if _, err := t.agent(ctx, a.AgentID); err != nil {
			return err
		}
		id := t.newID()
		if err := t.q.NudgeInsert(ctx, t.db, dbsqlc.NudgeInsertParams{
			TownID: t.TownID, NudgeID: id, AgentID: a.AgentID, Message: a.Message, Mode: "immediate",
			Priority: "urgent", Source: "reconciler:" + string(a.Tier), Now: t.Now,
		}); err != nil {
			return fmt.Errorf("insert nudge: %w", err)
		}
		// One row is both the GUPP dedupe record and the delivery record (the reference
		// wrote two, so agents could read a nudge twice: SPEC.md §9 item 19).
		t.addSideEffect(SendMessageEffect{AgentID: a.AgentID, Message: a.Message, NudgeID: id})
		return nil
	case reconciler.CreateTriageRequest:
		if _, err := t.agent(ctx, a.AgentID); err != nil {
			return err
		}
		_, err := t.createTriageRequest(ctx, triageRequest{
			Type: a.TriageType, AgentID: a.AgentID, Title: "Triage: " + a.Reason,
			Context: map[string]any{"reason": a.Reason}, HookedBeadID: a.HookedBeadID,
		})
		return err
	case reconciler.EmitEvent:
		t.logger.Info("reconciler event", "event", a.Name, "data", a.Data)
		return nil
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
	if err := t.promptContext(ctx, &start, b); err != nil {
		return err
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

// promptContext fills the role-specific context of a start (SPEC.md §5.5): a refinery
// gets the MR's branches, PR and review mode; a polecat the branch its work targets (or,
// for a PR fix-up, the PR and its branch); a triage batch the pending triage requests.
func (t *TownTx) promptContext(ctx context.Context, start *StartAgent, b reconciler.Bead) error {
	cfg := townConfig(t.Town.Config)
	var rig *reconciler.Rig
	if b.RigID != "" {
		r, err := t.rig(ctx, b.RigID)
		if err != nil {
			return err
		}
		rig = &r
		start.GitURL, start.DefaultBranch = r.GitURL, r.DefaultBranch
		start.ReviewMode = r.Config.ReviewMode
	}
	if start.ReviewMode == "" && cfg.Refinery != nil {
		start.ReviewMode = cfg.Refinery.ReviewMode
	}
	start.MergeStrategy = reconciler.EffectiveMergeStrategy(cfg, rig)
	switch {
	case b.Type == reconciler.BeadMergeRequest:
		rev, err := t.q.ReviewGet(ctx, t.db, dbsqlc.ReviewGetParams{TownID: t.TownID, BeadID: b.ID})
		if err != nil {
			return fmt.Errorf("get review metadata of %s: %w", b.ID, interpretError(err))
		}
		start.Branch, start.TargetBranch, start.PRURL = rev.Branch, rev.TargetBranch, deref(rev.PrUrl)
		start.SourceAgentID = b.MetaString("source_agent_id")
	case b.HasLabel(reconciler.LabelTriage) && b.CreatedBy == reconciler.CreatedByPatrol:
		reqs, err := t.q.BeadListOpenTriageRequests(ctx, t.db, t.TownID)
		if err != nil {
			return fmt.Errorf("list triage requests: %w", err)
		}
		var sb strings.Builder
		sb.WriteString("Pending triage requests; resolve each with gt_triage_resolve:\n")
		for _, r := range reqs {
			rb := beadFromInternal(&r)
			fmt.Fprintf(&sb, "- %s [%s] agent %s: %s\n", rb.ID, rb.MetaString("triage_type"), rb.AssigneeID, rb.Title)
		}
		start.Prompt = sb.String()
	case b.HasLabel(reconciler.LabelPRFeedback), b.HasLabel(reconciler.LabelPRConflict):
		// A fix-up of an open PR: the agent pushes to the PR's branch.
		start.PRURL, start.Branch = b.MetaString("pr_url"), b.MetaString("branch")
		start.TargetBranch = b.MetaString("target_branch")
	default:
		start.TargetBranch = start.DefaultBranch
		if _, cm, err := t.convoyOf(ctx, b.ID); err != nil {
			return err
		} else if cm != nil && cm.MergeMode != reconciler.MergeModeAndMerge && cm.FeatureBranch != "" {
			start.TargetBranch = cm.FeatureBranch
		}
	}
	return nil
}

// openConvoy reads a convoy that must still be open.
func (t *TownTx) openConvoy(ctx context.Context, id string) (reconciler.Bead, error) {
	c, err := t.bead(ctx, id)
	if err != nil {
		return c, err
	}
	if c.Type != reconciler.BeadConvoy || c.Status != reconciler.StatusOpen {
		return c, stale("convoy %s is %s", id, c.Status)
	}
	return c, nil
}

// applyCreateLandingMR counts a landing attempt and submits the convoy's feature branch
// for review by the rig's refinery.
func (t *TownTx) applyCreateLandingMR(ctx context.Context, a reconciler.CreateLandingMR) error {
	c, err := t.openConvoy(ctx, a.ConvoyID)
	if err != nil {
		return err
	}
	attempts := c.MetaInt("landing_mr_attempts")
	if attempts != a.Attempts {
		return stale("convoy %s has %d landing attempts, not %d", c.ID, attempts, a.Attempts)
	}
	if err := t.mergeMetadata(ctx, c.ID, map[string]any{"landing_mr_attempts": attempts + 1, "last_landing_mr_attempt_at": t.Now}); err != nil {
		return err
	}
	src := c
	src.RigID = a.RigID
	_, err = t.submitToReviewQueue(ctx, reconciler.CreatedBySystem, src, reconciler.AgentDonePayload{
		Branch: a.FeatureBranch, Summary: "Land convoy " + c.Title,
	})
	return err
}

// applyResetAgent zeroes an agent's attempts and its hooked bead's. A failed hooked bead
// stays failed (terminal beads are immutable; the reference's reopen was dead code).
func (t *TownTx) applyResetAgent(ctx context.Context, agentID string) error {
	ag, err := t.agent(ctx, agentID)
	if err != nil {
		return err
	}
	if err := t.resetDispatchAttempts(ctx, ag.ID); err != nil {
		return err
	}
	if ag.HookBeadID == "" {
		return nil
	}
	b, err := t.bead(ctx, ag.HookBeadID)
	if err != nil {
		return err
	}
	if err := t.q.BeadResetDispatch(ctx, t.db, dbsqlc.BeadResetDispatchParams{TownID: t.TownID, BeadID: b.ID, Now: t.Now}); err != nil {
		return fmt.Errorf("reset bead %s: %w", b.ID, err)
	}
	if b.Type == reconciler.BeadMergeRequest {
		return t.q.ReviewResetRetryCount(ctx, t.db, dbsqlc.ReviewResetRetryCountParams{TownID: t.TownID, BeadID: b.ID})
	}
	return nil
}

// applyPollPR rate-limits the next poll and keeps R4 quiet (updated_at, last_poll_at),
// then requests the poll.
func (t *TownTx) applyPollPR(ctx context.Context, a reconciler.PollPR) error {
	mr, err := t.bead(ctx, a.BeadID)
	if err != nil {
		return err
	}
	if mr.Status != reconciler.StatusInProgress {
		return stale("MR %s is %s", mr.ID, mr.Status)
	}
	if err := t.mergeMetadata(ctx, mr.ID, map[string]any{"last_poll_at": t.Now}); err != nil {
		return err
	}
	t.addSideEffect(PollPREffect{MRBeadID: mr.ID, PRURL: a.PRURL, WantFeedback: WantsPRFeedback(townConfig(t.Town.Config))})
	return nil
}

// applyMergePR requests a merge, unless the PR belongs to another repository than the
// rig's: then the pending merge is dropped.
func (t *TownTx) applyMergePR(ctx context.Context, a reconciler.MergePR) error {
	mr, err := t.bead(ctx, a.BeadID)
	if err != nil {
		return err
	}
	if mr.Status.Terminal() {
		return stale("MR %s is %s", mr.ID, mr.Status)
	}
	if mr.RigID != "" {
		rig, err := t.rig(ctx, mr.RigID)
		if err != nil {
			return err
		}
		if rigRepo, prRepo := repoOf(rig.GitURL), repoOf(a.PRURL); rigRepo != "" && prRepo != "" && rigRepo != prRepo {
			t.logger.Warn("PR belongs to another repository than its rig; merge dropped", "mr_bead_id", mr.ID, "pr_url", a.PRURL)
			return t.removeMetadata(ctx, mr.ID, "auto_merge_pending")
		}
	}
	t.addSideEffect(MergePREffect{MRBeadID: mr.ID, PRURL: a.PRURL})
	return nil
}
