package jobs

import (
	"context"
	"fmt"
	"time"

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

// Append appends events to a town's inbox and makes sure a tick will apply them: it joins
// a waiting tick (locked so it cannot start before the events commit), or leaves them to
// a running tick's post-commit re-check when that tick is still running after the events
// committed, or enqueues a tick in the same transaction. No wake-up is lost: a tick job
// turns completed at its tick's commit and re-checks for pending events after it.
func (e *Events) Append(ctx context.Context, townID string, events ...db.NewEvent) ([]db.AppendedEvent, error) {
	tx, err := e.svc.store.Pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin append: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// The inserts, then — in the same round trip — the town's tick jobs: a tick already
	// waiting will drain these events: join it (one cheap locked read). A running tick
	// re-checks for pending events once it has committed: leave it to that re-check while
	// it still runs after our commit. Only a town with neither gets a new tick job.
	// (Re-inserting River's unique job would rewrite the job row and wait for a running
	// tick to commit: every append of a busy town queued behind its tick.)
	out, st, err := e.svc.store.AppendEventsJoinTick(ctx, tx, townID, events)
	if err != nil {
		return nil, err
	}
	if st.Waiting || st.RunningJob != 0 {
		if err := tx.Commit(ctx); err != nil {
			return nil, fmt.Errorf("commit events: %w", err)
		}
		e.committed(townID, out)
		if st.RunningJob != 0 {
			running, err := e.svc.store.IsTickRunning(ctx, st.RunningJob)
			if err != nil || !running {
				// The tick committed before our events: it may have re-checked already.
				if err := e.svc.Wake(ctx, townID); err != nil {
					// Committed events are safe; the sweep finds them if this wake-up failed.
					e.svc.logger.Warn("wake town after append", "town_id", townID, "error", err)
				}
			}
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
	e.committed(townID, out)
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

// committed tells the OnAppend hook which events just committed.
func (e *Events) committed(townID string, out []db.AppendedEvent) {
	if e.svc.onAppend == nil {
		return
	}
	now := time.Now()
	seqs := make([]int64, 0, len(out))
	for _, a := range out {
		if !a.Duplicate {
			seqs = append(seqs, a.Seq)
		}
	}
	e.svc.onAppend(townID, seqs, now)
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
