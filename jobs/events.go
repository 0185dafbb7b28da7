package jobs

import (
	"context"
	"fmt"

	"github.com/riverqueue/river/rivertype"

	"gastown/agentrt"
	"gastown/db"
	"gastown/reconciler"
)

// Events is the front door for facts: the API, agents and side-effect jobs append events
// here, and the town wakes in the same transaction.
type Events struct {
	svc *Service
}

// Append appends events to a town's inbox and enqueues its tick, in one transaction.
//
// When the tick insert is skipped because the town's tick is running, that tick may have
// drained before these events committed; so after the commit Append enqueues again. By
// then either the running tick has finished (the insert succeeds) or it will see these
// events, committed, in its own post-commit check. No wake-up is lost.
func (e *Events) Append(ctx context.Context, townID string, events ...db.NewEvent) ([]db.AppendedEvent, error) {
	tx, err := e.svc.store.Pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin append: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	out := make([]db.AppendedEvent, 0, len(events))
	for _, ev := range events {
		a, err := e.svc.store.AppendEvent(ctx, tx, townID, ev)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	// A tick already waiting will drain these events: join it (one cheap locked read)
	// rather than re-inserting the unique job, which River answers by rewriting the job
	// row and which serializes every append of a busy town.
	joined, err := e.svc.store.JoinWaitingTick(ctx, tx, townID)
	if err != nil {
		return nil, err
	}
	if joined {
		if err := tx.Commit(ctx); err != nil {
			return nil, fmt.Errorf("commit events: %w", err)
		}
		return out, nil
	}
	res, err := e.svc.Client.InsertTx(ctx, tx, TickTownArgs{TownID: townID}, nil)
	if err != nil {
		return nil, fmt.Errorf("enqueue tick of town %s: %w", townID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit events: %w", err)
	}
	if !res.UniqueSkippedAsDuplicate {
		e.svc.announce.announce(QueueTicks)
	}
	if res.UniqueSkippedAsDuplicate && res.Job != nil && res.Job.State == rivertype.JobStateRunning {
		if err := e.svc.Wake(ctx, townID); err != nil {
			// Committed events are safe; the sweep finds them if this wake-up failed.
			e.svc.logger.Warn("wake town after append", "town_id", townID, "error", err)
		}
	}
	return out, nil
}

// Heartbeat implements agentrt.Reporter: it records the heartbeat for the next tick.
func (e *Events) Heartbeat(ctx context.Context, townID, agentID string, a agentrt.Activity) error {
	return e.svc.store.RecordHeartbeat(ctx, townID, agentID, db.Heartbeat{LastEventType: a.LastEventType, LastEventAt: a.LastEventAt, ActiveTools: a.ActiveTools})
}

// Done implements agentrt.Reporter: agent_done.
func (e *Events) Done(ctx context.Context, townID, agentID string, p reconciler.AgentDonePayload) error {
	_, err := e.Append(ctx, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: agentID, Payload: p})
	return err
}

// Completed implements agentrt.Reporter: agent_completed.
func (e *Events) Completed(ctx context.Context, townID, agentID string, p reconciler.AgentCompletedPayload) error {
	_, err := e.Append(ctx, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: agentID, Payload: p})
	return err
}
