package db

import (
	"context"
	"fmt"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// Housekeeping bounds.
const (
	mailPerTick = 50
	// PruneBatch bounds how many old events one tick deletes.
	PruneBatch = 500
	// triageCooldown keeps a failed triage batch from being replaced at once.
	triageCooldown   = 5 * time.Minute
	reEscalationStep = 4 * time.Hour
)

// HousekeepingResult counts what housekeeping did.
type HousekeepingResult struct {
	MailRequested int
	NudgesExpired int
	ReEscalated   int
	TriageBatch   bool
	EventsPruned  int
	// CheckpointNeeded: pruning removed the checkpoints replays could start from; the
	// tick must take one.
	CheckpointNeeded bool
}

// ChangedState reports whether housekeeping wrote anything the rules or invariants read
// (mail requests, re-escalations, a triage batch); expiring nudges and pruning processed
// events do not count.
func (r HousekeepingResult) ChangedState() bool {
	return r.MailRequested > 0 || r.ReEscalated > 0 || r.TriageBatch
}

// Housekeeping is SPEC.md §1.3 step 12, inside the tick: deliver mail to working agents,
// expire nudges, re-escalate stale escalations, start a triage batch when triage requests
// wait, and prune old processed events (a bounded batch per tick).
//
// One statement finds which steps have anything to do (most ticks: none); only those run
// their own queries.
func (t *TownTx) Housekeeping(ctx context.Context, retention time.Duration) (res HousekeepingResult, err error) {
	defer t.flushOnReturn(ctx, &err)
	due, err := t.q.HousekeepingDue(ctx, t.db, t.housekeepingDueParams(retention))
	if err != nil {
		return res, fmt.Errorf("housekeeping: %w", err)
	}
	return t.housekeep(ctx, due, retention)
}

// HousekeepingAndState is Housekeeping followed by LoadState for a tick whose actions
// wrote the state: the look for housekeeping's work and the reads of the tables written
// share one round trip (most ticks find no housekeeping to do). When housekeeping writes
// what the rules see (ChangedState), the tables it wrote are read again after it.
func (t *TownTx) HousekeepingAndState(ctx context.Context, retention time.Duration) (res HousekeepingResult, state *reconciler.Snapshot, err error) {
	defer t.flushOnReturn(ctx, &err)
	var (
		p   pipeline
		due dbsqlc.HousekeepingDueRow
	)
	p.add(func(q Querier) (err error) {
		due, err = t.q.HousekeepingDue(ctx, q, t.housekeepingDueParams(retention))
		return
	})
	r := queueStateReads(ctx, t.q, &p, t.TownID, t.unread(), t.sizeHint())
	if err := p.run(ctx, t.db); err != nil {
		return res, nil, fmt.Errorf("housekeeping and state: %w", err)
	}
	state = t.installState(r, true)
	if res, err = t.housekeep(ctx, due, retention); err != nil {
		return res, nil, err
	}
	if res.ChangedState() {
		state, err = t.LoadState(ctx)
	}
	return res, state, err
}

func (t *TownTx) housekeepingDueParams(retention time.Duration) dbsqlc.HousekeepingDueParams {
	return dbsqlc.HousekeepingDueParams{
		TownID: t.TownID, Now: &t.Now, MaxCount: reconciler.MaxReEscalations, PruneBefore: t.Now.Add(-retention),
		MailReofferBefore: t.Now.Add(-MailReofferAfter),
	}
}

// housekeep runs the housekeeping steps due finds work for.
func (t *TownTx) housekeep(ctx context.Context, due dbsqlc.HousekeepingDueRow, retention time.Duration) (res HousekeepingResult, err error) {
	if due.Mail {
		if res.MailRequested, err = t.requestMail(ctx); err != nil {
			return res, err
		}
	}
	if due.Nudges {
		n, err := t.q.NudgeDeleteExpired(ctx, t.db, dbsqlc.NudgeDeleteExpiredParams{TownID: t.TownID, Now: &t.Now})
		if err != nil {
			return res, fmt.Errorf("expire nudges: %w", err)
		}
		res.NudgesExpired = int(n)
	}
	if due.Escalations {
		if res.ReEscalated, err = t.reEscalate(ctx); err != nil {
			return res, err
		}
	}
	if due.Triage {
		if res.TriageBatch, err = t.maybeStartTriage(ctx); err != nil {
			return res, err
		}
	}
	if due.Prune {
		if res.EventsPruned, res.CheckpointNeeded, err = t.prune(ctx, retention); err != nil {
			return res, err
		}
	}
	return res, nil
}

// MailReofferAfter is how long a mail whose delivery was asked for waits for the
// outcome before it is offered again. A send_message job runs once (River does not retry
// it) and reports delivered or failed; only a job whose process died reports nothing, and
// River's rescuer discards it. Long past any job's run (a message's 10 s timeout and its
// report), so a job still at work is not doubled.
const MailReofferAfter = 2 * time.Minute

// requestMail asks for the delivery of undelivered mail to working agents, again for one
// whose earlier request never reported (MailReofferAfter).
func (t *TownTx) requestMail(ctx context.Context) (int, error) {
	mail, err := t.q.BeadListUndeliveredMail(ctx, t.db, dbsqlc.BeadListUndeliveredMailParams{TownID: t.TownID, MaxRows: mailPerTick, ReofferBefore: t.Now.Add(-MailReofferAfter)})
	if err != nil {
		return 0, fmt.Errorf("list mail: %w", err)
	}
	requested := 0
	for _, row := range mail {
		m := beadFromInternal(&row)
		if err := t.mergeMetadata(ctx, m.ID, map[string]any{"delivery_requested_at": t.Now}); err != nil {
			return requested, err
		}
		t.addSideEffect(SendMessageEffect{AgentID: m.AssigneeID, Message: m.Title + "\n\n" + m.Body, MailBeadID: m.ID})
		requested++
	}
	return requested, nil
}

// prune deletes a bounded batch of old processed events and, with them, the tick records
// of the same age; checkpointNeeded reports that it dropped the checkpoints a replay could
// start from, so the tick must take one.
func (t *TownTx) prune(ctx context.Context, retention time.Duration) (pruned int, checkpointNeeded bool, err error) {
	n, err := t.q.EventPruneProcessed(ctx, t.db, dbsqlc.EventPruneProcessedParams{TownID: t.TownID, Before: t.Now.Add(-retention), MaxRows: PruneBatch})
	if err != nil {
		return 0, false, fmt.Errorf("prune events: %w", err)
	}
	if n == 0 {
		return 0, false, nil
	}
	// The tick records go with the events (same retention).
	newest, err := t.q.TickInputPrune(ctx, t.db, dbsqlc.TickInputPruneParams{TownID: t.TownID, Before: t.Now.Add(-retention), MaxRows: PruneBatch})
	if err != nil {
		return int(n), false, fmt.Errorf("prune tick records: %w", err)
	}
	if newest == 0 {
		return int(n), false, nil
	}
	// No replay can start before the records that remain: drop those checkpoints and have
	// this tick take one, so there always is a place to start.
	if _, err := t.q.CheckpointPrune(ctx, t.db, dbsqlc.CheckpointPruneParams{TownID: t.TownID, BeforeTick: newest}); err != nil {
		return int(n), false, fmt.Errorf("prune checkpoints: %w", err)
	}
	return int(n), true, nil
}

var nextSeverity = map[string]reconciler.Priority{
	"low": reconciler.PriorityMedium, "medium": reconciler.PriorityHigh,
	"high": reconciler.PriorityCritical, "critical": reconciler.PriorityCritical,
}

// reEscalate bumps the severity of unacknowledged escalations every (n+1)×4 h, at most
// MaxReEscalations times, and tells the mayor.
func (t *TownTx) reEscalate(ctx context.Context) (int, error) {
	rows, err := t.q.EscalationListUnacknowledged(ctx, t.db, dbsqlc.EscalationListUnacknowledgedParams{TownID: t.TownID, MaxCount: reconciler.MaxReEscalations})
	if err != nil {
		return 0, fmt.Errorf("list escalations: %w", err)
	}
	count := 0
	for _, e := range rows {
		due := time.Duration(e.ReEscalationCount+1) * reEscalationStep
		if t.Now.Sub(e.BeadCreatedAt) <= due {
			continue
		}
		sev := nextSeverity[e.Severity]
		if err := t.q.EscalationBump(ctx, t.db, dbsqlc.EscalationBumpParams{TownID: t.TownID, BeadID: e.BeadID, Severity: string(sev)}); err != nil {
			return count, fmt.Errorf("bump escalation %s: %w", e.BeadID, err)
		}
		if err := t.logBeadEvent(ctx, e.BeadID, "", "escalated", e.Severity, string(sev), map[string]any{"re_escalation": e.ReEscalationCount + 1}); err != nil {
			return count, err
		}
		if sev != reconciler.PriorityLow {
			if err := t.notifyMayor(ctx, fmt.Sprintf("Escalation %s is unacknowledged and now %s.", e.BeadID, sev)); err != nil {
				return count, err
			}
		}
		count++
	}
	return count, nil
}

// maybeStartTriage creates a triage batch bead when triage requests wait and no batch is
// live (or failed within the cooldown). Rule B1 dispatches it like any issue of its rig;
// the agent's gt_done closes it.
func (t *TownTx) maybeStartTriage(ctx context.Context) (bool, error) {
	reqs, err := t.q.BeadCountOpenAutoTriageRequests(ctx, t.db, t.TownID)
	if err != nil {
		return false, fmt.Errorf("count triage requests: %w", err)
	}
	if reqs == 0 {
		// Escalation-type requests also wait for triage.
		all, err := t.q.BeadListOpenTriageRequests(ctx, t.db, t.TownID)
		if err != nil {
			return false, fmt.Errorf("list triage requests: %w", err)
		}
		if len(all) == 0 {
			return false, nil
		}
	}
	live, err := t.q.BeadLiveTriageBatchExists(ctx, t.db, dbsqlc.BeadLiveTriageBatchExistsParams{TownID: t.TownID, FailedSince: t.Now.Add(-triageCooldown)})
	if err != nil {
		return false, fmt.Errorf("check triage batch: %w", err)
	}
	if live {
		return false, nil
	}
	rigs, err := t.q.RigListByTown(ctx, t.db, t.TownID)
	if err != nil {
		return false, fmt.Errorf("list rigs: %w", err)
	}
	if len(rigs) == 0 {
		return false, nil
	}
	_, err = t.insertBead(ctx, newBead{
		Type: reconciler.BeadIssue, Title: "Triage pending requests", RigID: rigs[0].RigID,
		Labels: []string{reconciler.LabelTriage}, CreatedBy: reconciler.CreatedByPatrol,
		Body: "Resolve every open gt:triage-request with gt_triage_resolve, then call gt_done.",
	})
	return err == nil, err
}
