package db

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

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
		AssigneeAgentBeadID: ptr(p.AssigneeID), Priority: string(p.Priority), Labels: mustJSON(p.Labels), Metadata: mustJSON(p.Metadata),
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
		if a.Role == reconciler.RoleRefinery {
			return t.unhookedRefineryDone(ctx, a, p)
		}
		// Its exit may have been applied first and unhooked it (SPEC.md §9 item 3): the
		// bead it worked on still names it as assignee and is still in progress.
		b, found, err := t.liveWorkOf(ctx, a.ID)
		if err != nil || !found {
			if err == nil {
				t.logger.Warn("agent_done from an agent without a hook or live work; ignored", "agent_id", a.ID, "role", a.Role)
			}
			return err
		}
		return t.polecatDone(ctx, a, b, p)
	}
	b, err := t.bead(ctx, a.HookBeadID)
	if err != nil {
		return err
	}
	switch {
	case b.HasLabel(reconciler.LabelTriage) && b.CreatedBy == reconciler.CreatedByPatrol:
		if _, err := t.updateBeadStatus(ctx, b, reconciler.StatusClosed, a.ID, ""); err != nil {
			return err
		}
		return t.unhookBead(ctx, a)
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
		return t.polecatDone(ctx, a, b, p)
	}
}

// polecatDone submits a polecat's finished bead to the review queue: the MR opens, the
// agent is unhooked, the bead goes in_review.
func (t *TownTx) polecatDone(ctx context.Context, a reconciler.Agent, b reconciler.Bead, p reconciler.AgentDonePayload) error {
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

// liveWorkOf finds the one in_progress issue assigned to an agent.
func (t *TownTx) liveWorkOf(ctx context.Context, agentID string) (reconciler.Bead, bool, error) {
	rows, err := t.q.BeadListAssignedTo(ctx, t.db, dbsqlc.BeadListAssignedToParams{TownID: t.TownID, Assignee: &agentID})
	if err != nil {
		return reconciler.Bead{}, false, fmt.Errorf("list beads of agent %s: %w", agentID, err)
	}
	var found []reconciler.Bead
	for _, r := range rows {
		if b := beadFromInternal(&r); b.Type == reconciler.BeadIssue && b.Status == reconciler.StatusInProgress {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		return reconciler.Bead{}, false, nil
	}
	return found[0], true, nil
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
	if p.BeadID != "" && a.HookBeadID != "" && p.BeadID != a.HookBeadID {
		// The exit of a run on an earlier bead, reported after the agent was dispatched
		// onto new work: the new run is not touched.
		return t.logBeadEvent(ctx, a.ID, a.ID, "agent_exited", "", status, map[string]any{"reason": p.Reason, "bead_id": p.BeadID, "late": true})
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
		if err := t.resetDispatchAttempts(ctx, a.ID); err != nil {
			return err
		}
	}
	return t.logBeadEvent(ctx, a.ID, a.ID, "agent_exited", "", status, map[string]any{"reason": p.Reason})
}

// agentDispatched applies a successful start: a non-refinery agent still hooked to the
// bead gets its attempt counter reset (SPEC.md §5.5).
func (t *TownTx) agentDispatched(ctx context.Context, ev Event, p reconciler.AgentDispatchedPayload) error {
	a, err := t.agent(ctx, ev.AgentID)
	if errors.As(err, new(*MissingEntityError)) {
		return nil
	}
	if err != nil {
		return err
	}
	if a.Role == reconciler.RoleRefinery || a.HookBeadID != p.BeadID {
		return nil
	}
	return t.resetDispatchAttempts(ctx, a.ID)
}

// recordPR stores the PR a refinery opened for an MR, which becomes a PR-polling MR in
// progress. A URL that is not https:// fails the review instead (SPEC.md §3.3): the MR
// fails and its source hears of it as of any failed review.
func (t *TownTx) recordPR(ctx context.Context, a reconciler.Agent, mr reconciler.Bead, prURL string) error {
	if !strings.HasPrefix(prURL, "https://") {
		if err := t.logBeadEvent(ctx, mr.ID, a.ID, "pr_creation_failed", "", prURL, map[string]any{"reason": "invalid PR URL"}); err != nil {
			return err
		}
		return t.completeReview(ctx, mr, "failed", "invalid PR URL: "+prURL)
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

// unhookedRefineryDone handles gt_done from a refinery that lost its hook: its latest live
// MR gets the PR URL, or, without one, fails and escalates — merging optimistically would
// land a PR the refinery may have wanted changed (SPEC.md §3.3).
func (t *TownTx) unhookedRefineryDone(ctx context.Context, a reconciler.Agent, p reconciler.AgentDonePayload) error {
	row, err := t.q.BeadLatestLiveMRAssignedTo(ctx, t.db, dbsqlc.BeadLatestLiveMRAssignedToParams{TownID: t.TownID, Assignee: &a.ID})
	if err != nil {
		if IsNotFound(interpretError(err)) {
			t.logger.Warn("unhooked refinery reported done with no live MR; ignored", "agent_id", a.ID)
			return nil
		}
		return fmt.Errorf("find refinery %s's MR: %w", a.ID, err)
	}
	mr := beadFromInternal(&row)
	if p.PRURL != "" {
		return t.recordPR(ctx, a, mr, p.PRURL)
	}
	if err := t.completeReview(ctx, mr, "failed", "refinery lost its hook and reported done without a PR: cannot confirm merge"); err != nil {
		return err
	}
	_, err = t.createEscalation(ctx, escalation{
		Title: "Refinery reported done without a hook", Body: "MR " + mr.ID + " failed: the merge cannot be confirmed.",
		Severity: reconciler.PriorityHigh, Category: "refinery_unhooked_done", RigID: mr.RigID,
		Metadata: map[string]any{"kind": "refinery_unhooked_done", "mr_bead_id": mr.ID, "agent_id": a.ID},
	})
	return err
}

// applyRigUpdated changes the rig's settings the event gives and keeps the others.
func (t *TownTx) applyRigUpdated(ctx context.Context, _ Event, p reconciler.RigUpdatedPayload) error {
	rig, err := t.rig(ctx, p.RigID)
	if err != nil {
		return err
	}
	config := rig.Config
	if p.Config != nil {
		config = *p.Config
	}
	return t.q.RigUpdate(ctx, t.db, dbsqlc.RigUpdateParams{
		TownID: t.TownID, RigID: p.RigID, Name: cmp.Or(p.Name, rig.Name), GitUrl: cmp.Or(p.GitURL, rig.GitURL),
		DefaultBranch: cmp.Or(p.DefaultBranch, rig.DefaultBranch), Config: mustJSON(config),
	})
}

// applyTownConfig replaces the town's configuration.
func (t *TownTx) applyTownConfig(ctx context.Context, _ Event, p reconciler.TownConfigPayload) error {
	raw := mustJSON(p.Config)
	if err := t.q.TownSetConfig(ctx, t.db, dbsqlc.TownSetConfigParams{TownID: t.TownID, Config: raw, Now: t.Now}); err != nil {
		return fmt.Errorf("set town config: %w", err)
	}
	t.Town.Config = raw
	return nil
}

// containerStatus applies a non-running container status (SPEC.md §3.3): exited or
// not_found stops a working or stalled agent, after the cold-start grace for not_found.
func (t *TownTx) containerStatus(ctx context.Context, agentID string, p reconciler.ContainerStatusPayload) error {
	a, err := t.agent(ctx, agentID)
	var me *MissingEntityError
	if errors.As(err, &me) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Status == "not_found" && !a.LastActivityAt.IsZero() && t.Now.Sub(a.LastActivityAt) < reconciler.NotFoundGrace {
		return nil
	}
	if (a.Status != reconciler.AgentWorking && a.Status != reconciler.AgentStalled) || (p.Status != "exited" && p.Status != "not_found") {
		return nil
	}
	if a.Role == reconciler.RoleRefinery && a.HookBeadID != "" {
		mr, err := t.bead(ctx, a.HookBeadID)
		if err != nil && !errors.As(err, &me) {
			return err
		}
		if err != nil || mr.Status.Terminal() {
			return t.unhookBead(ctx, a) // unhook + idle + checkpoint cleared
		}
	}
	// Idle, hook kept: R6 re-dispatches a refinery, B3 recovers a polecat's bead.
	return t.setAgentStatus(ctx, a.ID, reconciler.AgentIdle)
}

// containerEviction starts a drain with the nonce the API handed to the container.
func (t *TownTx) containerEviction(ctx context.Context, _ Event, p reconciler.ContainerEvictionPayload) error {
	if err := t.q.TownSetDraining(ctx, t.db, dbsqlc.TownSetDrainingParams{TownID: t.TownID, DrainNonce: ptr(p.Nonce), Now: &t.Now}); err != nil {
		return fmt.Errorf("start drain: %w", err)
	}
	t.Town.Draining, t.Town.DrainNonce, t.Town.DrainStartedAt = true, ptr(p.Nonce), &t.Now
	return nil
}

// containerReady ends a drain when the nonce matches; a stale nonce changes nothing.
func (t *TownTx) containerReady(ctx context.Context, _ Event, p reconciler.ContainerReadyPayload) error {
	if !t.Town.Draining || p.Nonce == "" || p.Nonce != deref(t.Town.DrainNonce) {
		return nil
	}
	return t.clearDraining(ctx, "nonce acknowledged")
}

// clearDraining ends a drain.
func (t *TownTx) clearDraining(ctx context.Context, why string) error {
	if err := t.q.TownClearDraining(ctx, t.db, dbsqlc.TownClearDrainingParams{TownID: t.TownID, Now: t.Now}); err != nil {
		return fmt.Errorf("clear drain: %w", err)
	}
	t.Town.Draining, t.Town.DrainNonce, t.Town.DrainStartedAt = false, nil, nil
	t.logger.Info("drain ended", "why", why)
	return nil
}

// CheckDrainTimeout is the drain safety net: a drain older than DrainAutoClear ends.
func (t *TownTx) CheckDrainTimeout(ctx context.Context) (err error) {
	defer t.flushOnReturn(ctx, &err)
	if t.Town.Draining && t.Town.DrainStartedAt != nil && t.Now.Sub(*t.Town.DrainStartedAt) > reconciler.DrainAutoClear {
		return t.clearDraining(ctx, "safety net")
	}
	return nil
}

// prStatusChanged closes an MR whose PR merged, and fails one whose PR closed unmerged.
func (t *TownTx) prStatusChanged(ctx context.Context, beadID string, p reconciler.PRStatusChangedPayload) error {
	mr, err := t.bead(ctx, beadID)
	if err != nil {
		return err
	}
	switch p.PRState {
	case "merged":
		return t.completeReview(ctx, mr, "merged", "PR merged (detected by polling)")
	case "closed":
		return t.completeReview(ctx, mr, "failed", "PR closed without merge")
	}
	return nil
}

// beadCancelled moves a bead to its cancel status, unhooks its agents and — unlike the
// reference (SPEC.md §9 item 2) — stops the ones still running.
func (t *TownTx) beadCancelled(ctx context.Context, beadID string, p reconciler.BeadCancelledPayload) error {
	b, err := t.bead(ctx, beadID)
	var me *MissingEntityError
	if errors.As(err, &me) {
		t.logger.Warn("bead_cancelled for a bead that no longer exists", "bead_id", beadID)
		return nil
	}
	if err != nil {
		return err
	}
	to := p.CancelStatus
	if to != reconciler.StatusClosed && to != reconciler.StatusFailed {
		to = reconciler.StatusFailed
	}
	if _, err := t.updateBeadStatus(ctx, b, to, "user", "cancelled"); err != nil {
		return err
	}
	hooked, err := t.q.AgentListHookedTo(ctx, t.db, dbsqlc.AgentListHookedToParams{TownID: t.TownID, BeadID: &beadID})
	if err != nil {
		return fmt.Errorf("list agents hooked to %s: %w", beadID, err)
	}
	for _, row := range hooked {
		a := agentFromInternal(row)
		if a.Status == reconciler.AgentWorking || a.Status == reconciler.AgentStalled {
			t.addSideEffect(StopAgentEffect{AgentID: a.ID, Reason: "bead " + beadID + " cancelled"})
		}
		if err := t.unhookBead(ctx, a); err != nil {
			return err
		}
	}
	return nil
}

// beadStatusChanged applies a status change a user asked for (terminal statuses come as
// bead_cancelled). Terminal beads stay as they are.
func (t *TownTx) beadStatusChanged(ctx context.Context, beadID string, p reconciler.BeadStatusChangedPayload) error {
	b, err := t.bead(ctx, beadID)
	if err != nil {
		return err
	}
	if p.Status.Terminal() {
		return t.beadCancelled(ctx, beadID, reconciler.BeadCancelledPayload{CancelStatus: p.Status})
	}
	if !p.Status.Valid() {
		return fmt.Errorf("bead_status_changed: invalid status %q", p.Status)
	}
	actor := p.Actor
	if actor == "" {
		actor = "user"
	}
	_, err = t.updateBeadStatus(ctx, b, p.Status, actor, "")
	return err
}

// convoyCreated creates a convoy bead, its metadata, its task issues with their tracks
// edges and their blocks DAG. An existing convoy id makes it a no-op.
func (t *TownTx) convoyCreated(ctx context.Context, convoyID string, p reconciler.ConvoyCreatedPayload) error {
	exists, err := t.q.BeadExists(ctx, t.db, dbsqlc.BeadExistsParams{TownID: t.TownID, BeadID: convoyID})
	if err != nil {
		return fmt.Errorf("check convoy %s: %w", convoyID, err)
	}
	if exists {
		return nil
	}
	if len(p.Tasks) == 0 {
		return errors.New("convoy_created without tasks")
	}
	mode := p.MergeMode
	if mode == "" {
		mode = reconciler.MergeModeThenLand
	}
	var branch string
	if mode == reconciler.MergeModeThenLand {
		branch = fmt.Sprintf("convoy/%s/%s/head", slug(p.Title), short(convoyID))
	}
	if err := t.insertBeadWithID(ctx, convoyID, newBead{
		Type: reconciler.BeadConvoy, Title: p.Title, Labels: []string{reconciler.LabelConvoy},
		Metadata: map[string]any{"feature_branch": branch}, CreatedBy: "user",
	}); err != nil {
		return err
	}
	if err := t.q.ConvoyInsert(ctx, t.db, dbsqlc.ConvoyInsertParams{
		TownID: t.TownID, BeadID: convoyID, TotalBeads: int32(len(p.Tasks)), FeatureBranch: ptr(branch), MergeMode: &mode, Staged: p.Staged,
	}); err != nil {
		return fmt.Errorf("insert convoy metadata: %w", err)
	}
	for _, task := range p.Tasks {
		if _, err := t.rig(ctx, task.RigID); err != nil {
			return err
		}
		meta := map[string]any{"convoy_id": convoyID}
		if branch != "" {
			meta["feature_branch"] = branch
		}
		if err := t.insertBeadWithID(ctx, task.BeadID, newBead{
			Type: reconciler.BeadIssue, Title: task.Title, Body: task.Body, RigID: task.RigID, Metadata: meta, CreatedBy: "user",
		}); err != nil {
			return err
		}
		if err := t.addDependency(ctx, task.BeadID, convoyID, reconciler.DepTracks); err != nil {
			return err
		}
	}
	for _, task := range p.Tasks {
		for _, blocker := range task.BlockedBy {
			if err := t.addDependency(ctx, task.BeadID, blocker, reconciler.DepBlocks); err != nil {
				return err
			}
		}
	}
	return nil
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	s = strings.Trim(slugRE.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 40 {
		s = strings.TrimRight(s[:40], "-")
	}
	if s == "" {
		return "convoy"
	}
	return s
}

// convoyStarted releases a staged convoy.
func (t *TownTx) convoyStarted(ctx context.Context, ev Event, p reconciler.ConvoyStartedPayload) error {
	if p.ConvoyID == "" {
		t.logger.Warn("convoy_started without convoy_id", "seq", ev.Seq)
		return nil
	}
	return t.q.ConvoySetStaged(ctx, t.db, dbsqlc.ConvoySetStagedParams{TownID: t.TownID, BeadID: p.ConvoyID, Staged: false})
}

// liveMR reads an MR that must exist and be live for a PR event to act; ok is false when
// the event is a no-op.
func (t *TownTx) liveMR(ctx context.Context, mrID string) (reconciler.Bead, bool, error) {
	if mrID == "" {
		return reconciler.Bead{}, false, errors.New("mr_bead_id is required")
	}
	mr, err := t.bead(ctx, mrID)
	var me *MissingEntityError
	if errors.As(err, &me) {
		return mr, false, nil
	}
	if err != nil {
		return mr, false, err
	}
	return mr, !mr.Status.Terminal(), nil
}

// prFeedbackDetected creates a PR-feedback fix-up bead for an MR, once: an existing live
// feedback bead dedupes it, a live conflict bead absorbs it (SPEC.md §3.3).
func (t *TownTx) prFeedbackDetected(ctx context.Context, _ Event, p reconciler.PRFeedbackDetectedPayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	if fb, err := t.liveBlocker(ctx, mr.ID, reconciler.LabelPRFeedback); err != nil || fb != nil {
		return err
	}
	if cb, err := t.liveBlocker(ctx, mr.ID, reconciler.LabelPRConflict); err != nil {
		return err
	} else if cb != nil {
		return t.mergeMetadata(ctx, cb.ID, map[string]any{"has_feedback": 1})
	}
	what := "review comments & failing CI"
	if !p.HasUnresolvedComments && !p.HasFailingChecks && p.HasUncheckedRuns {
		what = "unchecked CI runs"
	}
	repo := p.Repo
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		repo = repo[i+1:]
	}
	id, err := t.insertBead(ctx, newBead{
		Type: reconciler.BeadIssue, Title: fmt.Sprintf("Address %s on PR #%d (%s)", what, p.PRNumber, repo),
		Body: "Review the unresolved threads and checks of " + p.PRURL + " (`gh pr view`, `gh pr checks`), fix them, " +
			"push to " + p.Branch + ", then call gt_done.",
		RigID: mr.RigID, ParentID: mr.ID, Labels: []string{reconciler.LabelPRFeedback},
		Metadata: map[string]any{"pr_feedback_for": mr.ID, "pr_url": p.PRURL, "branch": p.Branch}, CreatedBy: reconciler.CreatedBySystem,
	})
	if err != nil {
		return err
	}
	return t.addDependency(ctx, mr.ID, id, reconciler.DepBlocks)
}

// prConflictDetected handles a PR with merge conflicts: a conflict fix-up bead (or a flag
// on a live feedback bead) when auto-resolution is on, else an escalation with a triage
// request.
func (t *TownTx) prConflictDetected(ctx context.Context, _ Event, p reconciler.PRConflictDetectedPayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	if cb, err := t.liveBlocker(ctx, mr.ID, reconciler.LabelPRConflict); err != nil || cb != nil {
		return err
	}
	target := ""
	if rev, err := t.q.ReviewGet(ctx, t.db, dbsqlc.ReviewGetParams{TownID: t.TownID, BeadID: mr.ID}); err == nil {
		target = rev.TargetBranch
	}
	var rig *reconciler.Rig
	if mr.RigID != "" {
		if r, err := t.rig(ctx, mr.RigID); err == nil {
			rig = &r
		}
	}
	if reconciler.EffectiveAutoResolveConflicts(townConfig(t.Town.Config), rig) {
		if fb, err := t.liveBlocker(ctx, mr.ID, reconciler.LabelPRFeedback); err != nil {
			return err
		} else if fb != nil {
			return t.mergeMetadata(ctx, fb.ID, map[string]any{"has_conflicts": 1, "conflict_target_branch": target})
		}
		id, err := t.insertBead(ctx, newBead{
			Type: reconciler.BeadIssue, Title: "Resolve merge conflicts on PR: " + p.Branch,
			Body:  "Rebase " + p.Branch + " onto " + target + ", resolve the conflicts, force-push, then call gt_done.",
			RigID: mr.RigID, ParentID: mr.ID, Labels: []string{reconciler.LabelPRConflict},
			Metadata:  map[string]any{"pr_url": p.PRURL, "branch": p.Branch, "target_branch": target, "mr_bead_id": mr.ID, "source_bead_id": p.SourceBeadID},
			CreatedBy: reconciler.CreatedBySystem,
		})
		if err != nil {
			return err
		}
		return t.addDependency(ctx, mr.ID, id, reconciler.DepBlocks)
	}
	escID, err := t.createEscalation(ctx, escalation{
		Title: "Merge conflict on PR: " + p.Branch, Body: "PR " + p.PRURL + " has merge conflicts and auto-resolution is off.",
		Severity: reconciler.PriorityHigh, Category: "merge_conflict", RigID: mr.RigID,
		Metadata: map[string]any{"conflict": true, "mr_bead_id": mr.ID, "pr_url": p.PRURL},
	})
	if err != nil {
		return err
	}
	_, err = t.createTriageRequest(ctx, triageRequest{
		Type: "escalation", Title: "Triage: merge conflict on " + p.Branch,
		Context: map[string]any{"escalation_bead_id": escID, "mr_bead_id": mr.ID, "pr_url": p.PRURL},
		Options: []string{"ESCALATE_TO_MAYOR", "RESTART", "CLOSE_BEAD", "REASSIGN_BEAD"}, HookedBeadID: mr.ID,
	})
	return err
}

// prAutoMerge marks an MR for merging; Rule R1 then emits merge_pr.
func (t *TownTx) prAutoMerge(ctx context.Context, _ Event, p reconciler.PRAutoMergePayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	return t.mergeMetadata(ctx, mr.ID, map[string]any{"auto_merge_pending": 1})
}

// nudgeDelivered marks a nudge delivered.
func (t *TownTx) nudgeDelivered(ctx context.Context, _ Event, p reconciler.DeliveryPayload) error {
	return t.q.NudgeMarkDelivered(ctx, t.db, dbsqlc.NudgeMarkDeliveredParams{TownID: t.TownID, NudgeID: p.NudgeID, Now: &t.Now})
}

// mailDelivered closes a delivered message bead.
func (t *TownTx) mailDelivered(ctx context.Context, _ Event, p reconciler.DeliveryPayload) error {
	b, err := t.bead(ctx, p.BeadID)
	if err != nil {
		return err
	}
	_, err = t.updateBeadStatus(ctx, b, reconciler.StatusClosed, reconciler.CreatedBySystem, "")
	return err
}

// mailDeliveryFailed makes a message deliverable again on a later tick.
func (t *TownTx) mailDeliveryFailed(ctx context.Context, _ Event, p reconciler.DeliveryPayload) error {
	if _, err := t.bead(ctx, p.BeadID); err != nil {
		return err
	}
	return t.removeMetadata(ctx, p.BeadID, "delivery_requested_at")
}

// escalationAcknowledged acknowledges an escalation.
func (t *TownTx) escalationAcknowledged(ctx context.Context, beadID string, _ reconciler.EscalationAcknowledgedPayload) error {
	if _, err := t.bead(ctx, beadID); err != nil {
		return err
	}
	return t.q.EscalationAcknowledge(ctx, t.db, dbsqlc.EscalationAcknowledgeParams{TownID: t.TownID, BeadID: beadID, Now: &t.Now})
}
