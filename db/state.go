package db

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// The state helpers of SPEC.md §2.14. They run inside a TownTx and write with its clock.

// logBeadEvent appends to a bead's activity feed.
func (t *TownTx) logBeadEvent(_ context.Context, beadID, agentID, typ, oldValue, newValue string, meta map[string]any) error {
	if meta == nil {
		meta = map[string]any{}
	}
	// Held back with the tick's other feed rows: they go out as one statement (writeBehind).
	t.wb.logFeed(dbsqlc.BeadEventInsertParams{
		TownID: t.TownID, BeadID: beadID, AgentID: ptr(agentID), EventType: typ,
		OldValue: ptr(oldValue), NewValue: ptr(newValue), Metadata: mustJSON(meta), Now: t.Now,
	})
	return nil
}

// updateBeadStatus moves a bead to a status: a no-op when it is already there, and when
// it is terminal (closed and failed are immutable). It reports whether the bead changed.
func (t *TownTx) updateBeadStatus(ctx context.Context, b reconciler.Bead, to reconciler.BeadStatus, actor, failureReason string) (bool, error) {
	if b.Status == to {
		return false, nil
	}
	if b.Status.Terminal() {
		t.logger.Warn("bead is terminal; status left unchanged", "bead_id", b.ID, "status", b.Status, "to", to)
		return false, nil
	}
	if err := t.q.BeadSetStatus(ctx, t.db, dbsqlc.BeadSetStatusParams{TownID: t.TownID, BeadID: b.ID, Status: string(to), Now: t.Now}); err != nil {
		return false, fmt.Errorf("set status of bead %s: %w", b.ID, err)
	}
	var meta map[string]any
	if to == reconciler.StatusFailed && failureReason != "" {
		meta = map[string]any{"failure_reason": map[string]any{"code": "reconciler", "message": failureReason, "source": "scheduler"}}
	}
	if err := t.logBeadEvent(ctx, b.ID, "", "status_changed", string(b.Status), string(to), withActor(meta, actor)); err != nil {
		return false, err
	}
	if to.Terminal() {
		if err := t.updateConvoyProgress(ctx, b.ID); err != nil {
			return false, err
		}
		if b.Type == reconciler.BeadMergeRequest {
			// A finished MR can finish its source's convoy too.
			if src := b.MetaString("source_bead_id"); src != "" {
				if err := t.updateConvoyProgress(ctx, src); err != nil {
					return false, err
				}
			}
		}
	}
	return true, nil
}

func withActor(meta map[string]any, actor string) map[string]any {
	if actor == "" {
		return meta
	}
	if meta == nil {
		meta = map[string]any{}
	}
	meta["actor"] = actor
	return meta
}

// hookBead hooks an agent to a bead (SPEC.md §2.14): idempotent for the same bead, an
// error when the agent holds another hook; other agents hooked to the bead are unhooked;
// the agent goes idle with fresh activity; the bead gets the agent as assignee.
func (t *TownTx) hookBead(ctx context.Context, a reconciler.Agent, b reconciler.Bead) error {
	switch b.Type {
	case reconciler.BeadEscalation, reconciler.BeadConvoy, reconciler.BeadAgent, reconciler.BeadMessage:
		return fmt.Errorf("bead %s of type %s cannot be hooked", b.ID, b.Type)
	}
	if b.HasLabel(reconciler.LabelTriageRequest) {
		return fmt.Errorf("bead %s is a triage request and cannot be hooked", b.ID)
	}
	if a.HookBeadID == b.ID {
		return nil
	}
	if a.HookBeadID != "" {
		return fmt.Errorf("agent %s is already hooked to bead %s", a.ID, a.HookBeadID)
	}
	others, err := t.q.AgentListHookedTo(ctx, t.db, dbsqlc.AgentListHookedToParams{TownID: t.TownID, BeadID: &b.ID})
	if err != nil {
		return fmt.Errorf("list agents hooked to %s: %w", b.ID, err)
	}
	for _, o := range others {
		if err := t.unhookBead(ctx, agentFromInternal(o)); err != nil {
			return err
		}
	}
	if err := t.agentInMemory(a.ID, func() error {
		if err := t.q.AgentHook(ctx, t.db, dbsqlc.AgentHookParams{TownID: t.TownID, AgentID: a.ID, BeadID: &b.ID, Now: &t.Now}); err != nil {
			return fmt.Errorf("hook agent %s: %w", a.ID, err)
		}
		return nil
	}, func(m *reconciler.Agent) {
		m.HookBeadID, m.Status, m.StalledAt, m.LastActivityAt = b.ID, reconciler.AgentIdle, time.Time{}, t.Now.Truncate(time.Microsecond)
	}); err != nil {
		return err
	}
	if err := t.q.BeadSetAssignee(ctx, t.db, dbsqlc.BeadSetAssigneeParams{TownID: t.TownID, BeadID: b.ID, Assignee: &a.ID, Now: t.Now}); err != nil {
		return fmt.Errorf("assign bead %s: %w", b.ID, err)
	}
	return t.logBeadEvent(ctx, b.ID, a.ID, "hooked", "", a.ID, nil)
}

// unhookBead clears an agent's hook, sets it idle and clears its checkpoint; the bead is
// not touched. A no-op without a hook.
func (t *TownTx) unhookBead(ctx context.Context, a reconciler.Agent) error {
	if a.HookBeadID == "" {
		return nil
	}
	if err := t.agentInMemory(a.ID, func() error {
		if err := t.q.AgentUnhook(ctx, t.db, dbsqlc.AgentUnhookParams{TownID: t.TownID, AgentID: a.ID}); err != nil {
			return fmt.Errorf("unhook agent %s: %w", a.ID, err)
		}
		return nil
	}, func(m *reconciler.Agent) {
		m.HookBeadID, m.Status, m.StalledAt = "", reconciler.AgentIdle, time.Time{}
	}); err != nil {
		return err
	}
	return t.logBeadEvent(ctx, a.HookBeadID, a.ID, "unhooked", a.ID, "", nil)
}

// setAgentStatus sets an agent's status (stalled_at maintained by the query).
func (t *TownTx) setAgentStatus(ctx context.Context, agentID string, s reconciler.AgentStatus) error {
	return t.agentInMemory(agentID, func() error {
		if err := t.q.AgentSetStatus(ctx, t.db, dbsqlc.AgentSetStatusParams{TownID: t.TownID, AgentID: agentID, Status: string(s), Now: &t.Now}); err != nil {
			return fmt.Errorf("set status of agent %s: %w", agentID, err)
		}
		return nil
	}, func(a *reconciler.Agent) {
		switch {
		case s != reconciler.AgentStalled:
			a.StalledAt = time.Time{}
		case a.StalledAt.IsZero():
			a.StalledAt = t.Now.Truncate(time.Microsecond)
		}
		a.Status = s
	})
}

// resetDispatchAttempts zeroes an agent's attempt counter.
func (t *TownTx) resetDispatchAttempts(ctx context.Context, agentID string) error {
	return t.agentInMemory(agentID, func() error {
		if err := t.q.AgentResetDispatchAttempts(ctx, t.db, dbsqlc.AgentResetDispatchAttemptsParams{TownID: t.TownID, AgentID: agentID}); err != nil {
			return fmt.Errorf("reset dispatch attempts of agent %s: %w", agentID, err)
		}
		return nil
	}, func(a *reconciler.Agent) { a.DispatchAttempts = 0 })
}

// clearAssignee clears a bead's assignee and unhooks every agent hooked to it, so no
// agent stays hooked to a bead that is not assigned to it.
func (t *TownTx) clearAssignee(ctx context.Context, beadID string) error {
	if err := t.q.BeadSetAssignee(ctx, t.db, dbsqlc.BeadSetAssigneeParams{TownID: t.TownID, BeadID: beadID, Now: t.Now}); err != nil {
		return fmt.Errorf("clear assignee of bead %s: %w", beadID, err)
	}
	hooked, err := t.q.AgentListHookedTo(ctx, t.db, dbsqlc.AgentListHookedToParams{TownID: t.TownID, BeadID: &beadID})
	if err != nil {
		return fmt.Errorf("list agents hooked to %s: %w", beadID, err)
	}
	for _, a := range hooked {
		if err := t.unhookBead(ctx, agentFromInternal(a)); err != nil {
			return err
		}
	}
	return nil
}

// getOrCreateAgent returns the agent to dispatch for a role in a rig: the rig's refinery
// (whatever its status), an idle unhooked polecat of the rig, or a new agent.
func (t *TownTx) getOrCreateAgent(ctx context.Context, role reconciler.AgentRole, rigID string) (reconciler.Agent, error) {
	var (
		row dbsqlc.Agent
		err error
	)
	switch role {
	case reconciler.RoleRefinery:
		row, err = t.q.AgentFindRefinery(ctx, t.db, dbsqlc.AgentFindRefineryParams{TownID: t.TownID, RigID: &rigID})
	case reconciler.RolePolecat:
		row, err = t.q.AgentFindIdlePolecat(ctx, t.db, dbsqlc.AgentFindIdlePolecatParams{TownID: t.TownID, RigID: &rigID})
	default:
		return reconciler.Agent{}, fmt.Errorf("cannot create an agent of role %q for a rig", role)
	}
	if err == nil {
		return agentFromInternal(row), nil
	}
	if err := interpretError(err); !errors.Is(err, ErrNotFound) {
		return reconciler.Agent{}, fmt.Errorf("find %s: %w", role, err)
	}
	name := string(role)
	if role == reconciler.RolePolecat {
		if name, err = t.allocatePolecatName(ctx); err != nil {
			return reconciler.Agent{}, err
		}
	}
	return t.createAgent(ctx, role, name, rigID)
}

// allocatePolecatName returns the first unused name of the pool, then Polecat-<n>.
func (t *TownTx) allocatePolecatName(ctx context.Context) (string, error) {
	used, err := t.q.AgentListPolecatNames(ctx, t.db, t.TownID)
	if err != nil {
		return "", fmt.Errorf("list polecat names: %w", err)
	}
	for _, n := range reconciler.PolecatNames {
		if !slices.Contains(used, n) {
			return n, nil
		}
	}
	for i := len(used) + 1; ; i++ {
		if n := fmt.Sprintf("Polecat-%d", i); !slices.Contains(used, n) {
			return n, nil
		}
	}
}

// createAgent creates an agent bead and its agents row: idle, unhooked, never active.
func (t *TownTx) createAgent(ctx context.Context, role reconciler.AgentRole, name, rigID string) (reconciler.Agent, error) {
	id := t.newID()
	if err := t.q.BeadInsert(ctx, t.db, dbsqlc.BeadInsertParams{
		TownID: t.TownID, BeadID: id, Type: string(reconciler.BeadAgent), Status: string(reconciler.StatusOpen),
		Title: name, RigID: ptr(rigID), Priority: string(reconciler.PriorityMedium),
		Labels: []byte("[]"), Metadata: []byte("{}"), CreatedBy: ptr(reconciler.CreatedBySystem), Now: t.Now,
	}); err != nil {
		return reconciler.Agent{}, fmt.Errorf("insert agent bead: %w", err)
	}
	identity := fmt.Sprintf("%s-%s-%s@%s", name, role, short(rigID), short(t.TownID))
	if role == reconciler.RoleMayor {
		identity = "mayor-" + short(t.TownID)
	}
	if err := t.q.AgentInsert(ctx, t.db, dbsqlc.AgentInsertParams{
		TownID: t.TownID, AgentID: id, Role: string(role), Name: name, RigID: ptr(rigID), Identity: identity, Now: t.Now,
	}); err != nil {
		return reconciler.Agent{}, fmt.Errorf("insert agent: %w", err)
	}
	if err := t.logBeadEvent(ctx, id, id, "agent_spawned", "", string(role), nil); err != nil {
		return reconciler.Agent{}, err
	}
	return t.agent(ctx, id)
}

func short(id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// submitToReviewQueue creates the MR bead for a finished source bead (SPEC.md §2.14):
// open, tracking the source, with review metadata targeting the source's review-then-land
// convoy feature branch, else the rig's default branch.
func (t *TownTx) submitToReviewQueue(ctx context.Context, agentID string, src reconciler.Bead, p reconciler.AgentDonePayload) (string, error) {
	target := "main"
	if src.RigID != "" {
		rig, err := t.rig(ctx, src.RigID)
		if err != nil {
			return "", err
		}
		target = rig.DefaultBranch
	}
	meta := map[string]any{"source_bead_id": src.ID, "source_agent_id": agentID}
	if p.PRURL != "" {
		meta["pr_url"] = p.PRURL
	}
	convoy, cm, err := t.convoyOf(ctx, src.ID)
	if err != nil {
		return "", err
	}
	if convoy != nil {
		meta["convoy_id"] = convoy.ID
		if cm.MergeMode != reconciler.MergeModeAndMerge && cm.FeatureBranch != "" {
			target = cm.FeatureBranch
			meta["convoy_feature_branch"] = cm.FeatureBranch
		}
	}
	createdBy := agentID
	if createdBy == "" {
		createdBy = reconciler.CreatedBySystem
	}
	id, err := t.insertBead(ctx, newBead{
		Type: reconciler.BeadMergeRequest, Title: "Review: " + p.Branch, Body: p.Summary, RigID: src.RigID,
		Labels: []string{reconciler.LabelMergeRequest}, Metadata: meta, CreatedBy: createdBy,
	})
	if err != nil {
		return "", err
	}
	if err := t.addDependency(ctx, id, src.ID, reconciler.DepTracks); err != nil {
		return "", err
	}
	var prURL *string
	if strings.HasPrefix(p.PRURL, "https://") {
		prURL = &p.PRURL
	}
	if err := t.q.ReviewInsert(ctx, t.db, dbsqlc.ReviewInsertParams{TownID: t.TownID, BeadID: id, Branch: p.Branch, TargetBranch: target, PrUrl: prURL}); err != nil {
		return "", fmt.Errorf("insert review metadata: %w", err)
	}
	return id, t.logBeadEvent(ctx, src.ID, ptrOrEmpty(agentID), "review_submitted", "", id, map[string]any{"branch": p.Branch})
}

// ptrOrEmpty passes an agent id to the feed only when it is one (not "system").
func ptrOrEmpty(agentID string) string {
	if agentID == reconciler.CreatedBySystem {
		return ""
	}
	return agentID
}

// completeReviewMerged closes an MR as merged: the MR and its source close, and every
// other MR of the same source is force-closed.
func (t *TownTx) completeReviewMerged(ctx context.Context, mr reconciler.Bead, message string) error {
	if _, err := t.updateBeadStatus(ctx, mr, reconciler.StatusClosed, reconciler.CreatedBySystem, ""); err != nil {
		return err
	}
	srcID := mr.MetaString("source_bead_id")
	if srcID == "" {
		return nil
	}
	src, err := t.bead(ctx, srcID)
	if err != nil {
		return err
	}
	if err := t.logBeadEvent(ctx, src.ID, "", "review_completed", "", "merged", map[string]any{"mr_bead_id": mr.ID, "message": message}); err != nil {
		return err
	}
	if _, err := t.updateBeadStatus(ctx, src, reconciler.StatusClosed, reconciler.CreatedBySystem, ""); err != nil {
		return err
	}
	if err := t.q.BeadCloseOtherMRs(ctx, t.db, dbsqlc.BeadCloseOtherMRsParams{TownID: t.TownID, SourceBeadID: src.ID, ExcludeBeadID: mr.ID, Now: &t.Now}); err != nil {
		return fmt.Errorf("close sibling MRs of %s: %w", src.ID, err)
	}
	if src.Type == reconciler.BeadConvoy { // a landing MR merged: the convoy landed
		if err := t.q.ConvoySetLanded(ctx, t.db, dbsqlc.ConvoySetLandedParams{TownID: t.TownID, BeadID: src.ID, LandedAt: &t.Now}); err != nil {
			return fmt.Errorf("set convoy %s landed: %w", src.ID, err)
		}
	}
	return t.updateConvoyProgress(ctx, src.ID)
}
