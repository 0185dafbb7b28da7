package db

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// applyBeadCreated creates the bead the event carries; an existing bead makes it a no-op
// (the reference's bead_created is audit-only for a bead that already exists).
func (t *TownTx) applyBeadCreated(ctx context.Context, beadID string, p reconciler.BeadCreatedPayload) error {
	if beadID == "" {
		return errors.New("bead_created without bead id")
	}
	exists, err := t.q.BeadExists(ctx, t.db, dbsqlc.BeadExistsParams{TownID: t.TownID, BeadID: beadID})
	if err != nil {
		return fmt.Errorf("check bead %s: %w", beadID, err)
	}
	if exists {
		return nil
	}
	if !p.Type.Valid() || p.Type == reconciler.BeadAgent {
		return fmt.Errorf("bead_created: invalid bead type %q", p.Type)
	}
	if p.RigID != "" {
		if _, err := t.rig(ctx, p.RigID); err != nil {
			return err
		}
	}
	if p.Priority == "" {
		p.Priority = reconciler.PriorityMedium
	}
	if p.Labels == nil {
		p.Labels = []string{}
	}
	if p.Metadata == nil {
		p.Metadata = map[string]any{}
	}
	if err := t.q.BeadInsert(ctx, t.db, dbsqlc.BeadInsertParams{
		TownID: t.TownID, BeadID: beadID, Type: string(p.Type), Status: string(reconciler.StatusOpen),
		Title: p.Title, Body: ptr(p.Body), RigID: ptr(p.RigID), ParentBeadID: ptr(p.ParentID),
		Priority: string(p.Priority), Labels: mustJSON(p.Labels), Metadata: mustJSON(p.Metadata),
		CreatedBy: ptr(p.CreatedBy), Now: t.Now,
	}); err != nil {
		return fmt.Errorf("insert bead %s: %w", beadID, err)
	}
	for _, blocker := range p.BlockedBy {
		if _, err := t.bead(ctx, blocker); err != nil {
			return err
		}
		if err := t.q.DependencyInsert(ctx, t.db, dbsqlc.DependencyInsertParams{
			TownID: t.TownID, BeadID: beadID, DependsOnBeadID: blocker, DependencyType: string(reconciler.DepBlocks), Now: t.Now,
		}); err != nil {
			return fmt.Errorf("add blocker %s to bead %s: %w", blocker, beadID, err)
		}
	}
	return t.logBeadEvent(ctx, beadID, "", "created", "", string(reconciler.StatusOpen), map[string]any{"created_by": p.CreatedBy})
}

// applyRigCreated adds a rig; an existing rig id makes it a no-op.
func (t *TownTx) applyRigCreated(ctx context.Context, p reconciler.RigCreatedPayload) error {
	if p.RigID == "" || p.Name == "" {
		return errors.New("rig_created needs rig_id and name")
	}
	branch := p.DefaultBranch
	if branch == "" {
		branch = "main"
	}
	if err := t.q.RigInsert(ctx, t.db, dbsqlc.RigInsertParams{
		TownID: t.TownID, RigID: p.RigID, Name: p.Name, GitUrl: p.GitURL, DefaultBranch: branch,
		Config: mustJSON(p.Config), Now: t.Now,
	}); err != nil {
		return fmt.Errorf("insert rig %s: %w", p.RigID, err)
	}
	return nil
}

// agentDone applies agent_done (SPEC.md §3.3): the agent finished its hooked bead.
func (t *TownTx) agentDone(ctx context.Context, agentID string, p reconciler.AgentDonePayload) error {
	a, err := t.agent(ctx, agentID)
	if err != nil {
		return err
	}
	if a.HookBeadID == "" {
		t.logger.Warn("agent_done from an agent without a hook; ignored", "agent_id", a.ID, "role", a.Role)
		return nil
	}
	b, err := t.bead(ctx, a.HookBeadID)
	if err != nil {
		return err
	}
	switch {
	case b.HasLabel(reconciler.LabelRework), b.HasLabel(reconciler.LabelPRFixup),
		b.HasLabel(reconciler.LabelPRConflict), b.HasLabel(reconciler.LabelPRFeedback):
		// Fix-up work closes without review; closing it unblocks the parent MR.
		if _, err := t.updateBeadStatus(ctx, b, reconciler.StatusClosed, a.ID, ""); err != nil {
			return err
		}
		return t.unhookBead(ctx, a)
	case a.Role == reconciler.RoleRefinery:
		if p.PRURL != "" {
			if err := t.recordPR(ctx, a, b, p.PRURL); err != nil {
				return err
			}
			return t.unhookBead(ctx, a)
		}
		// Direct strategy: the refinery merged the branch itself.
		if err := t.completeReviewMerged(ctx, b, "merged by refinery"); err != nil {
			return err
		}
		return t.unhookBead(ctx, a) // also sets the refinery idle
	default:
		if strings.TrimSpace(p.Branch) == "" {
			return errors.New("agent_done without a branch")
		}
		if _, err := t.submitToReviewQueue(ctx, a.ID, b, p); err != nil {
			return err
		}
		if err := t.unhookBead(ctx, a); err != nil {
			return err
		}
		_, err := t.updateBeadStatus(ctx, b, reconciler.StatusInReview, a.ID, "")
		return err
	}
}

// agentCompleted applies agent_completed (SPEC.md §3.3): the agent's process exited.
func (t *TownTx) agentCompleted(ctx context.Context, agentID string, p reconciler.AgentCompletedPayload) error {
	a, err := t.agent(ctx, agentID)
	var missingErr *MissingEntityError
	if errors.As(err, &missingErr) {
		return nil // silent no-op, as in the reference
	}
	if err != nil {
		return err
	}
	status := p.Status
	if status != "completed" {
		status = "failed"
	}
	if a.HookBeadID != "" && a.Role != reconciler.RoleRefinery {
		// A refinery is never unhooked or failed here: its exit races with gt_done.
		b, err := t.bead(ctx, a.HookBeadID)
		if err != nil && !errors.As(err, &missingErr) {
			return err
		}
		if err == nil {
			switch {
			case status == "failed":
				if _, err := t.updateBeadStatus(ctx, b, reconciler.StatusFailed, a.ID, "agent_failed"); err != nil {
					return err
				}
			case b.Status == reconciler.StatusInProgress && p.Reason == "container eviction" &&
				(a.LastActivityAt.IsZero() || t.Now.Sub(a.LastActivityAt) > reconciler.HeartbeatStale):
				// Evicted with a stale heartbeat: give the bead back. A fresh heartbeat
				// means the agent lives on elsewhere (#3538); Rule B3 recovers otherwise.
				if _, err := t.updateBeadStatus(ctx, b, reconciler.StatusOpen, a.ID, ""); err != nil {
					return err
				}
				if err := t.q.BeadSetAssignee(ctx, t.db, dbsqlc.BeadSetAssigneeParams{TownID: t.TownID, BeadID: b.ID, Now: t.Now}); err != nil {
					return fmt.Errorf("clear assignee of bead %s: %w", b.ID, err)
				}
			}
		}
		if err := t.unhookBead(ctx, a); err != nil {
			return err
		}
		if a, err = t.agent(ctx, agentID); err != nil {
			return err
		}
	}
	// An agent already re-dispatched onto new work keeps its status.
	if a.Status != reconciler.AgentWorking || a.HookBeadID == "" {
		if err := t.setAgentStatus(ctx, a.ID, reconciler.AgentIdle); err != nil {
			return err
		}
	}
	if a.Role != reconciler.RoleRefinery { // kept for R6's cap (#1342)
		if err := t.q.AgentResetDispatchAttempts(ctx, t.db, dbsqlc.AgentResetDispatchAttemptsParams{TownID: t.TownID, AgentID: a.ID}); err != nil {
			return fmt.Errorf("reset dispatch attempts of agent %s: %w", a.ID, err)
		}
	}
	return t.logBeadEvent(ctx, a.ID, a.ID, "agent_exited", "", status, map[string]any{"reason": p.Reason})
}

// agentDispatched applies a successful start: a non-refinery agent still hooked to the
// bead gets its attempt counter reset (SPEC.md §5.5).
func (t *TownTx) agentDispatched(ctx context.Context, agentID string, p reconciler.AgentDispatchedPayload) error {
	row, err := t.q.AgentGet(ctx, t.db, dbsqlc.AgentGetParams{TownID: t.TownID, AgentID: agentID})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get agent %s: %w", agentID, err)
	}
	a := agentFromInternal(row)
	if a.Role == reconciler.RoleRefinery || a.HookBeadID != p.BeadID {
		return nil
	}
	if err := t.q.AgentResetDispatchAttempts(ctx, t.db, dbsqlc.AgentResetDispatchAttemptsParams{TownID: t.TownID, AgentID: a.ID}); err != nil {
		return fmt.Errorf("reset dispatch attempts of agent %s: %w", a.ID, err)
	}
	return nil
}

// recordPR stores the PR a refinery opened for an MR, which becomes a PR-polling MR in
// progress. A URL that is not https:// fails the review instead.
func (t *TownTx) recordPR(ctx context.Context, a reconciler.Agent, mr reconciler.Bead, prURL string) error {
	if !strings.HasPrefix(prURL, "https://") {
		if err := t.logBeadEvent(ctx, mr.ID, a.ID, "pr_creation_failed", "", prURL, map[string]any{"reason": "invalid PR URL"}); err != nil {
			return err
		}
		_, err := t.updateBeadStatus(ctx, mr, reconciler.StatusFailed, a.ID, "invalid PR URL: "+prURL)
		return err
	}
	if err := t.q.ReviewSetPRURL(ctx, t.db, dbsqlc.ReviewSetPRURLParams{TownID: t.TownID, BeadID: mr.ID, PrUrl: &prURL}); err != nil {
		return fmt.Errorf("set PR URL of %s: %w", mr.ID, err)
	}
	if err := t.q.BeadMergeMetadata(ctx, t.db, dbsqlc.BeadMergeMetadataParams{TownID: t.TownID, BeadID: mr.ID, Patch: mustJSON(map[string]any{"pr_url": prURL}), Now: t.Now}); err != nil {
		return fmt.Errorf("store PR URL on %s: %w", mr.ID, err)
	}
	if _, err := t.updateBeadStatus(ctx, mr, reconciler.StatusInProgress, a.ID, ""); err != nil {
		return err
	}
	return t.logBeadEvent(ctx, mr.ID, a.ID, "pr_created", "", prURL, nil)
}
