package db

import (
	"context"
	"fmt"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// prPolled applies what a poll observed of an open PR: the decision tree of SPEC.md §5.3,
// evaluated in the tick with the tick's clock instead of in the side effect.
func (t *TownTx) prPolled(ctx context.Context, _ Event, p reconciler.PRPolledPayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	// A successful poll resets the failure counters.
	if err := t.mergeMetadata(ctx, mr.ID, map[string]any{"poll_transient_count": 0, "poll_non_transient_count": 0}); err != nil {
		return err
	}
	if err := t.removeMetadata(ctx, mr.ID, "poll_error_kind", "poll_null_count"); err != nil {
		return err
	}
	cfg := townConfig(t.Town.Config)
	if cfg.Refinery == nil {
		return nil
	}
	rev, err := t.q.ReviewGet(ctx, t.db, dbsqlc.ReviewGetParams{TownID: t.TownID, BeadID: mr.ID})
	if err != nil {
		return fmt.Errorf("get review of %s: %w", mr.ID, interpretError(err))
	}
	switch p.MergeableState {
	case "unknown", "":
		return nil // retried on the next poll
	case "dirty":
		if !mr.MetaTruthy("has_conflicts") {
			if err := t.mergeMetadata(ctx, mr.ID, map[string]any{"has_conflicts": 1, "conflicts_detected_at": t.Now}); err != nil {
				return err
			}
			if err := t.prConflictDetected(ctx, Event{}, reconciler.PRConflictDetectedPayload{
				MRBeadID: mr.ID, SourceBeadID: mr.MetaString("source_bead_id"), PRURL: p.PRURL, Branch: rev.Branch,
			}); err != nil {
				return err
			}
		}
		return t.setAutoMergeReadySince(ctx, mr.ID, nil)
	default: // clean, blocked, has_hooks
		if _, ok := mr.Metadata["has_conflicts"]; ok {
			if err := t.removeMetadata(ctx, mr.ID, "has_conflicts", "conflicts_detected_at"); err != nil {
				return err
			}
		}
	}
	f := p.Feedback
	if f == nil {
		return nil
	}
	if err := t.recordFeedback(ctx, mr, *f); err != nil {
		return err
	}
	ref := cfg.Refinery
	wantsResolve := ref.AutoResolvePRFeedback != nil && *ref.AutoResolvePRFeedback
	if wantsResolve && (f.HasUnresolvedComments || f.HasFailingChecks || f.HasUncheckedRuns) && p.StillOpen {
		if err := t.prFeedbackDetected(ctx, Event{}, reconciler.PRFeedbackDetectedPayload{
			MRBeadID: mr.ID, PRURL: p.PRURL, PRNumber: p.PRNumber, Repo: p.Repo, Branch: rev.Branch,
			HasUnresolvedComments: f.HasUnresolvedComments, HasFailingChecks: f.HasFailingChecks, HasUncheckedRuns: f.HasUncheckedRuns,
		}); err != nil {
			return err
		}
		if err := t.q.ReviewSetLastFeedbackCheck(ctx, t.db, dbsqlc.ReviewSetLastFeedbackCheckParams{TownID: t.TownID, BeadID: mr.ID, CheckedAt: &t.Now}); err != nil {
			return fmt.Errorf("record feedback check: %w", err)
		}
	}
	if !wantsAutoMerge(cfg) {
		return nil
	}
	if !f.Green() {
		return t.setAutoMergeReadySince(ctx, mr.ID, nil)
	}
	if rev.AutoMergeReadySince == nil {
		return t.setAutoMergeReadySince(ctx, mr.ID, &t.Now)
	}
	delay := time.Duration(*ref.AutoMergeDelayMinutes) * time.Minute
	if t.Now.Sub(*rev.AutoMergeReadySince) >= delay {
		return t.prAutoMerge(ctx, Event{}, reconciler.PRAutoMergePayload{MRBeadID: mr.ID, PRURL: p.PRURL})
	}
	return nil
}

// wantsAutoMerge: the town's auto_merge is not off and a delay is configured.
func wantsAutoMerge(cfg reconciler.TownConfig) bool {
	r := cfg.Refinery
	return r != nil && (r.AutoMerge == nil || *r.AutoMerge) && r.AutoMergeDelayMinutes != nil
}

// WantsPRFeedback reports whether a poll should fetch PR feedback: the town auto-resolves
// feedback or auto-merges.
func WantsPRFeedback(cfg reconciler.TownConfig) bool {
	r := cfg.Refinery
	return r != nil && ((r.AutoResolvePRFeedback != nil && *r.AutoResolvePRFeedback) || wantsAutoMerge(cfg))
}

// recordFeedback stores the review state of a PR and the awaiting-approval transitions.
func (t *TownTx) recordFeedback(ctx context.Context, mr reconciler.Bead, f reconciler.PRFeedback) error {
	awaiting := 0
	if f.AwaitingApproval {
		awaiting = 1
	}
	patch := map[string]any{"awaiting_approval": awaiting, "review_decision": f.ReviewDecision, "merge_state_status": f.MergeStateStatus}
	was := mr.MetaTruthy("awaiting_approval")
	switch {
	case f.AwaitingApproval && !was:
		patch["awaiting_approval_observed_at"] = t.Now
		t.logger.Info("pr.awaiting_approval_detected", "mr_bead_id", mr.ID)
	case !f.AwaitingApproval && was:
		t.logger.Info("pr.awaiting_approval_resolved", "mr_bead_id", mr.ID)
	}
	if err := t.mergeMetadata(ctx, mr.ID, patch); err != nil {
		return err
	}
	if !f.AwaitingApproval && was {
		return t.removeMetadata(ctx, mr.ID, "awaiting_approval_observed_at")
	}
	return nil
}

func (t *TownTx) setAutoMergeReadySince(ctx context.Context, mrID string, at *time.Time) error {
	if err := t.q.ReviewSetAutoMergeReadySince(ctx, t.db, dbsqlc.ReviewSetAutoMergeReadySinceParams{TownID: t.TownID, BeadID: mrID, ReadySince: at}); err != nil {
		return fmt.Errorf("set auto-merge timer of %s: %w", mrID, err)
	}
	return nil
}

// prPollFailed counts a failed poll (SPEC.md §5.3 step 3): some kinds fail the MR at
// once, transient HTTP errors after PRPollTransientLimit in a row, invalid responses after
// PRPollNonTransientLimit in a row.
func (t *TownTx) prPollFailed(ctx context.Context, _ Event, p reconciler.PRPollFailedPayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	patch := map[string]any{"poll_error_kind": p.Kind}
	fail := false
	switch {
	case p.Kind == "http_error" && p.Transient:
		n := mr.MetaInt("poll_transient_count") + 1
		patch["poll_transient_count"], patch["poll_non_transient_count"] = n, 0
		fail = n >= reconciler.PRPollTransientLimit
	case p.Kind == "invalid_response":
		n := max(mr.MetaInt("poll_non_transient_count"), mr.MetaInt("poll_null_count")) + 1
		patch["poll_non_transient_count"], patch["poll_transient_count"] = n, 0
		fail = n >= reconciler.PRPollNonTransientLimit
	default: // no_token, unrecognized_url, host_mismatch, permanent http_error
		fail = true
	}
	if fail {
		patch["failureReason"], patch["failureKind"], patch["failureMessage"] = "pr_poll_failed", p.Kind, "PR polling failed: "+p.Message
	}
	if err := t.mergeMetadata(ctx, mr.ID, patch); err != nil {
		return err
	}
	if err := t.removeMetadata(ctx, mr.ID, "poll_null_count"); err != nil {
		return err
	}
	if !fail {
		return nil
	}
	t.logger.Warn("pr.poll_failed", "mr_bead_id", mr.ID, "kind", p.Kind, "message", p.Message)
	_, err = t.updateBeadStatus(ctx, mr, reconciler.StatusFailed, reconciler.CreatedBySystem, "PR polling failed: "+p.Message)
	return err
}

// prMergeFailed clears the pending merge and its timer: polling resumes and a later green
// poll re-arms it.
func (t *TownTx) prMergeFailed(ctx context.Context, _ Event, p reconciler.PRMergeFailedPayload) error {
	mr, ok, err := t.liveMR(ctx, p.MRBeadID)
	if err != nil || !ok {
		return err
	}
	if err := t.removeMetadata(ctx, mr.ID, "auto_merge_pending"); err != nil {
		return err
	}
	return t.setAutoMergeReadySince(ctx, mr.ID, nil)
}
