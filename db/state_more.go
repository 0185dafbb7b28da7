package db

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// newBead is what insertBead writes.
type newBead struct {
	Type       reconciler.BeadType
	Title      string
	Body       string
	RigID      string
	ParentID   string
	AssigneeID string
	Priority   reconciler.Priority
	Labels     []string
	Metadata   map[string]any
	CreatedBy  string
}

// insertBead creates an open bead with an id derived from the tick.
func (t *TownTx) insertBead(ctx context.Context, nb newBead) (string, error) {
	id := t.newID()
	return id, t.insertBeadWithID(ctx, id, nb)
}

func (t *TownTx) insertBeadWithID(ctx context.Context, id string, nb newBead) error {
	if nb.Priority == "" {
		nb.Priority = reconciler.PriorityMedium
	}
	if nb.Labels == nil {
		nb.Labels = []string{}
	}
	if nb.Metadata == nil {
		nb.Metadata = map[string]any{}
	}
	if err := t.q.BeadInsert(ctx, t.db, dbsqlc.BeadInsertParams{
		TownID: t.TownID, BeadID: id, Type: string(nb.Type), Status: string(reconciler.StatusOpen),
		Title: nb.Title, Body: ptr(nb.Body), RigID: ptr(nb.RigID), ParentBeadID: ptr(nb.ParentID),
		AssigneeAgentBeadID: ptr(nb.AssigneeID), Priority: string(nb.Priority), Labels: mustJSON(nb.Labels),
		Metadata: mustJSON(nb.Metadata), CreatedBy: ptr(nb.CreatedBy), Now: t.Now,
	}); err != nil {
		return fmt.Errorf("insert %s bead: %w", nb.Type, err)
	}
	return t.logBeadEvent(ctx, id, "", "created", "", string(reconciler.StatusOpen), map[string]any{"created_by": nb.CreatedBy})
}

func (t *TownTx) addDependency(ctx context.Context, beadID, dependsOn string, typ reconciler.DependencyType) error {
	if err := t.q.DependencyInsert(ctx, t.db, dbsqlc.DependencyInsertParams{
		TownID: t.TownID, BeadID: beadID, DependsOnBeadID: dependsOn, DependencyType: string(typ), Now: t.Now,
	}); err != nil {
		return fmt.Errorf("add %s edge %s → %s: %w", typ, beadID, dependsOn, err)
	}
	return nil
}

func (t *TownTx) mergeMetadata(ctx context.Context, beadID string, patch map[string]any) error {
	if err := t.q.BeadMergeMetadata(ctx, t.db, dbsqlc.BeadMergeMetadataParams{TownID: t.TownID, BeadID: beadID, Patch: mustJSON(patch), Now: t.Now}); err != nil {
		return fmt.Errorf("update metadata of %s: %w", beadID, err)
	}
	return nil
}

func (t *TownTx) removeMetadata(ctx context.Context, beadID string, keys ...string) error {
	if err := t.q.BeadRemoveMetadataKeys(ctx, t.db, dbsqlc.BeadRemoveMetadataKeysParams{TownID: t.TownID, BeadID: beadID, Keys: keys, Now: t.Now}); err != nil {
		return fmt.Errorf("remove metadata of %s: %w", beadID, err)
	}
	return nil
}

func (t *TownTx) trackers(ctx context.Context, beadID string) ([]reconciler.Bead, error) {
	rows, err := t.q.BeadListTrackers(ctx, t.db, dbsqlc.BeadListTrackersParams{TownID: t.TownID, BeadID: beadID})
	if err != nil {
		return nil, fmt.Errorf("list trackers of %s: %w", beadID, err)
	}
	out := make([]reconciler.Bead, len(rows))
	for i, r := range rows {
		out[i] = beadFromInternal(&r)
	}
	return out, nil
}

func (t *TownTx) tracked(ctx context.Context, beadID string) ([]reconciler.Bead, error) {
	rows, err := t.q.BeadListTracked(ctx, t.db, dbsqlc.BeadListTrackedParams{TownID: t.TownID, BeadID: beadID})
	if err != nil {
		return nil, fmt.Errorf("list beads tracked by %s: %w", beadID, err)
	}
	out := make([]reconciler.Bead, len(rows))
	for i, r := range rows {
		out[i] = beadFromInternal(&r)
	}
	return out, nil
}

// liveBlocker returns the non-terminal bead with the label that blocks the bead, or nil.
func (t *TownTx) liveBlocker(ctx context.Context, beadID, label string) (*reconciler.Bead, error) {
	row, err := t.q.BeadLiveBlockerWithLabel(ctx, t.db, dbsqlc.BeadLiveBlockerWithLabelParams{TownID: t.TownID, BeadID: beadID, Label: label})
	if err != nil {
		if IsNotFound(interpretError(err)) {
			return nil, nil
		}
		return nil, fmt.Errorf("find %s blocker of %s: %w", label, beadID, err)
	}
	b := beadFromInternal(&row)
	return &b, nil
}

// IsNotFound reports whether err is ErrNotFound.
func IsNotFound(err error) bool { return err == ErrNotFound } //nolint:errorlint // interpretError returns it bare

// convoyOf returns the review-then-land convoy a bead belongs to, with its metadata.
func (t *TownTx) convoyOf(ctx context.Context, beadID string) (*reconciler.Bead, *reconciler.Convoy, error) {
	if t.state.tracksNoConvoy(beadID, t.wb.wrote) {
		return nil, nil, nil
	}
	parents, err := t.tracked(ctx, beadID)
	if err != nil {
		return nil, nil, err
	}
	for i := range parents {
		if parents[i].Type != reconciler.BeadConvoy {
			continue
		}
		m, err := t.q.ConvoyGet(ctx, t.db, dbsqlc.ConvoyGetParams{TownID: t.TownID, BeadID: parents[i].ID})
		if err != nil {
			if IsNotFound(interpretError(err)) {
				continue
			}
			return nil, nil, fmt.Errorf("get convoy %s: %w", parents[i].ID, err)
		}
		c := convoyFromInternal(m)
		return &parents[i], &c, nil
	}
	return nil, nil, nil
}

// updateConvoyProgress recounts every convoy the bead belongs to (SPEC.md §2.14): done
// beads are terminal with no live MR; when all are done, a review-then-land convoy with a
// feature branch becomes ready to land, any other convoy closes.
func (t *TownTx) updateConvoyProgress(ctx context.Context, beadID string) error {
	if t.state.tracksNoConvoy(beadID, t.wb.wrote) {
		return nil
	}
	parents, err := t.tracked(ctx, beadID)
	if err != nil {
		return err
	}
	for _, p := range parents {
		if p.Type != reconciler.BeadConvoy || p.Status.Terminal() {
			continue
		}
		m, err := t.q.ConvoyGet(ctx, t.db, dbsqlc.ConvoyGetParams{TownID: t.TownID, BeadID: p.ID})
		if err != nil {
			if IsNotFound(interpretError(err)) {
				continue
			}
			return fmt.Errorf("get convoy %s: %w", p.ID, err)
		}
		prog, err := t.q.ConvoyProgress(ctx, t.db, dbsqlc.ConvoyProgressParams{TownID: t.TownID, ConvoyID: p.ID})
		if err != nil {
			return fmt.Errorf("count convoy %s: %w", p.ID, err)
		}
		if err := t.q.ConvoySetClosedBeads(ctx, t.db, dbsqlc.ConvoySetClosedBeadsParams{TownID: t.TownID, BeadID: p.ID, ClosedBeads: prog.Done}); err != nil {
			return fmt.Errorf("set convoy progress: %w", err)
		}
		total := max(prog.Total, m.TotalBeads)
		if total == 0 || prog.Done < total {
			continue
		}
		if deref(m.MergeMode) != reconciler.MergeModeAndMerge && deref(m.FeatureBranch) != "" {
			if err := t.mergeMetadata(ctx, p.ID, map[string]any{"ready_to_land": 1}); err != nil {
				return err
			}
			continue
		}
		if err := t.closeConvoy(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// closeConvoy closes a convoy as landed.
func (t *TownTx) closeConvoy(ctx context.Context, convoy reconciler.Bead) error {
	changed, err := t.updateBeadStatus(ctx, convoy, reconciler.StatusClosed, reconciler.CreatedBySystem, "")
	if err != nil || !changed {
		return err
	}
	if err := t.q.ConvoySetLanded(ctx, t.db, dbsqlc.ConvoySetLandedParams{TownID: t.TownID, BeadID: convoy.ID, LandedAt: &t.Now}); err != nil {
		return fmt.Errorf("set convoy %s landed: %w", convoy.ID, err)
	}
	return nil
}

// completeReview finishes a review (SPEC.md §2.14 completeReviewWithResult).
func (t *TownTx) completeReview(ctx context.Context, mr reconciler.Bead, result, message string) error {
	if result == "merged" {
		return t.completeReviewMerged(ctx, mr, message)
	}
	if _, err := t.updateBeadStatus(ctx, mr, reconciler.StatusFailed, reconciler.CreatedBySystem, message); err != nil {
		return err
	}
	srcID := mr.MetaString("source_bead_id")
	if srcID == "" {
		return nil
	}
	src, err := t.bead(ctx, srcID)
	if err != nil {
		if _, ok := err.(*MissingEntityError); ok { //nolint:errorlint // bead returns it bare
			return nil
		}
		return err
	}
	if err := t.logBeadEvent(ctx, src.ID, "", "review_completed", "", result, map[string]any{"mr_bead_id": mr.ID, "message": message}); err != nil {
		return err
	}
	if result == "conflict" {
		if _, err := t.createEscalation(ctx, escalation{
			Title: "Merge conflict: " + mr.Title, Body: message, Severity: reconciler.PriorityHigh,
			Category: "merge_conflict", RigID: mr.RigID, Metadata: map[string]any{"mr_bead_id": mr.ID, "conflict": true},
		}); err != nil {
			return err
		}
	}
	if src.Status.Terminal() {
		return nil
	}
	// Back to open and unassigned: Rule B1 dispatches the rework.
	if _, err := t.updateBeadStatus(ctx, src, reconciler.StatusOpen, reconciler.CreatedBySystem, ""); err != nil {
		return err
	}
	if err := t.q.BeadSetAssignee(ctx, t.db, dbsqlc.BeadSetAssigneeParams{TownID: t.TownID, BeadID: src.ID, Now: t.Now}); err != nil {
		return fmt.Errorf("clear assignee of %s: %w", src.ID, err)
	}
	return nil
}

// escalation is what createEscalation writes.
type escalation struct {
	Title, Body string
	Severity    reconciler.Priority
	Category    string
	RigID       string
	Metadata    map[string]any
}

// createEscalation creates an escalation bead with its metadata.
func (t *TownTx) createEscalation(ctx context.Context, e escalation) (string, error) {
	id, err := t.insertBead(ctx, newBead{
		Type: reconciler.BeadEscalation, Title: e.Title, Body: e.Body, RigID: e.RigID, Priority: e.Severity,
		Labels:   []string{reconciler.LabelEscalation, "severity:" + string(e.Severity)},
		Metadata: e.Metadata, CreatedBy: reconciler.CreatedBySystem,
	})
	if err != nil {
		return "", err
	}
	if err := t.q.EscalationInsert(ctx, t.db, dbsqlc.EscalationInsertParams{TownID: t.TownID, BeadID: id, Severity: string(e.Severity), Category: ptr(e.Category)}); err != nil {
		return "", fmt.Errorf("insert escalation metadata: %w", err)
	}
	return id, t.logBeadEvent(ctx, id, "", "escalated", "", string(e.Severity), nil)
}

// Triage request options the triage agent understands (the reference offered CLOSE and
// ESCALATE, which its resolver did not: SPEC.md §9 item 16).
var defaultTriageOptions = []string{"RESTART", "CLOSE_BEAD", "ESCALATE_TO_MAYOR"}

// triageRequest is what createTriageRequest writes.
type triageRequest struct {
	Type         string
	AgentID      string
	Title        string
	Context      map[string]any
	Options      []string
	HookedBeadID string
}

// createTriageRequest creates a triage request unless one of the same type is open for the
// agent, or (for automatic requests) five are open already. It reports whether it created.
func (t *TownTx) createTriageRequest(ctx context.Context, r triageRequest) (bool, error) {
	exists, err := t.q.BeadOpenTriageRequestExists(ctx, t.db, dbsqlc.BeadOpenTriageRequestExistsParams{TownID: t.TownID, TriageType: r.Type, AgentID: ptr(r.AgentID), HookedBeadID: ptr(r.HookedBeadID)})
	if err != nil {
		return false, fmt.Errorf("check triage requests: %w", err)
	}
	if exists {
		return false, nil
	}
	if r.Type != "escalation" {
		n, err := t.q.BeadCountOpenAutoTriageRequests(ctx, t.db, t.TownID)
		if err != nil {
			return false, fmt.Errorf("count triage requests: %w", err)
		}
		if int(n) >= reconciler.MaxOpenTriageRequests {
			t.logger.Warn("triage request cap reached; request dropped", "type", r.Type, "agent_id", r.AgentID)
			return false, nil
		}
	}
	if r.Options == nil {
		r.Options = defaultTriageOptions
	}
	meta := map[string]any{"triage_type": r.Type, "agent_bead_id": r.AgentID, "context": r.Context, "options": r.Options}
	if r.HookedBeadID != "" {
		meta["hooked_bead_id"] = r.HookedBeadID
	}
	_, err = t.insertBead(ctx, newBead{
		Type: reconciler.BeadIssue, Title: r.Title, AssigneeID: r.AgentID,
		Labels: []string{reconciler.LabelTriageRequest}, Metadata: meta, CreatedBy: reconciler.CreatedByPatrol,
	})
	return err == nil, err
}

// deleteBead deletes a bead and its children (SPEC.md §2.14): agents hooked to it are
// unhooked, and every event about it goes too.
func (t *TownTx) deleteBead(ctx context.Context, beadID string) error {
	children, err := t.q.BeadListChildren(ctx, t.db, dbsqlc.BeadListChildrenParams{TownID: t.TownID, BeadID: &beadID})
	if err != nil {
		return fmt.Errorf("list children of %s: %w", beadID, err)
	}
	for _, c := range children {
		if err := t.deleteBead(ctx, c); err != nil {
			return err
		}
	}
	hooked, err := t.q.AgentListHookedTo(ctx, t.db, dbsqlc.AgentListHookedToParams{TownID: t.TownID, BeadID: &beadID})
	if err != nil {
		return fmt.Errorf("list agents hooked to %s: %w", beadID, err)
	}
	for _, a := range hooked {
		if err := t.q.AgentUnhook(ctx, t.db, dbsqlc.AgentUnhookParams{TownID: t.TownID, AgentID: a.AgentID}); err != nil {
			return fmt.Errorf("unhook agent %s: %w", a.AgentID, err)
		}
	}
	if err := t.q.EventDeleteBySubject(ctx, t.db, dbsqlc.EventDeleteBySubjectParams{TownID: t.TownID, SubjectID: &beadID}); err != nil {
		return fmt.Errorf("delete events of %s: %w", beadID, err)
	}
	if _, err := t.q.BeadDelete(ctx, t.db, dbsqlc.BeadDeleteParams{TownID: t.TownID, BeadID: beadID}); err != nil {
		return fmt.Errorf("delete bead %s: %w", beadID, err)
	}
	return nil
}

// deleteAgent deletes an agent (SPEC.md §2.14): terminal beads assigned to it lose the
// assignee, live ones go back to open and unassigned; then the agent bead goes.
func (t *TownTx) deleteAgent(ctx context.Context, agentID string) error {
	if err := t.q.BeadClearAssigneeOfTerminal(ctx, t.db, dbsqlc.BeadClearAssigneeOfTerminalParams{TownID: t.TownID, Assignee: &agentID, Now: t.Now}); err != nil {
		return fmt.Errorf("release terminal beads of %s: %w", agentID, err)
	}
	if err := t.q.BeadReopenAssignedTo(ctx, t.db, dbsqlc.BeadReopenAssignedToParams{TownID: t.TownID, Assignee: &agentID, Now: t.Now}); err != nil {
		return fmt.Errorf("reopen beads of %s: %w", agentID, err)
	}
	if err := t.q.HeartbeatDelete(ctx, t.db, dbsqlc.HeartbeatDeleteParams{TownID: t.TownID, AgentID: agentID}); err != nil {
		return fmt.Errorf("delete heartbeat of %s: %w", agentID, err)
	}
	return t.deleteBead(ctx, agentID)
}

var repoRE = regexp.MustCompile(`^(?:https?://|git@)([^/:]+)[/:]([^/]+)/([^/.]+?)(?:\.git)?(?:/.*)?$`)

// repoOf returns host/owner/name of a git or PR URL, or "".
func repoOf(url string) string {
	m := repoRE.FindStringSubmatch(strings.TrimSpace(url))
	if m == nil {
		return ""
	}
	return strings.ToLower(m[1] + "/" + m[2] + "/" + m[3])
}
