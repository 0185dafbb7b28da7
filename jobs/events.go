package jobs

import (
	"context"
	"time"

	"gastown/agentrt"
	"gastown/db"
	"gastown/reconciler"
)

// Events is the front door for facts: the API, agents and side-effect jobs append events
// here, and the town wakes in the same transaction.
type Events struct {
	svc *Service
}

// Append appends events to a town's inbox and makes sure a tick will apply them, in one
// round trip that is its own transaction (no BEGIN, no COMMIT): the inserts, a look for
// the town's tick jobs and, for a town with neither a waiting nor a running tick, the
// insert of its tick job (one event; see db.AppendEventsJoinTick). A tick already waiting
// is share-locked until the events commit, so it cannot start before them and drains
// them; a running tick re-checks for pending events once it has committed, which finds
// these if it still runs after they committed. Otherwise — several events, a running
// tick that finished first, a tick job River's unique index holds in another state — a
// tick is enqueued after the commit. Should that fail, or the process die first, the
// events are committed and safe all the same, and the sweep wakes their town (pending
// events with no tick, after SweepInterval): the append has succeeded. (Re-inserting
// River's unique job while a tick runs would rewrite the job row and wait for that tick
// to commit: every append of a busy town queued behind its tick.)
func (e *Events) Append(ctx context.Context, townID string, events ...db.NewEvent) ([]db.AppendedEvent, error) {
	tick, err := tickJob(townID)
	if err != nil {
		return nil, err
	}
	out, st, err := e.svc.store.AppendEventsJoinTick(ctx, e.svc.store.Pool, townID, events, tick)
	if err != nil {
		return nil, err
	}
	e.committed(townID, out)
	if err := e.svc.Ticker.at(ctx, "appended", townID); err != nil {
		e.svc.logger.Warn("append: nothing done after the commit (failpoint); the sweep wakes the town", "town_id", townID, "error", err)
		return out, nil
	}
	switch {
	case st.Waiting:
		return out, nil
	case st.EnqueuedJob != 0:
		e.svc.announce.announce(QueueTicks)
		return out, nil
	case st.RunningJob != 0:
		if running, err := e.svc.store.IsTickRunning(ctx, st.RunningJob); err == nil && running {
			return out, nil
		}
		// The tick committed before our events: it may have re-checked already.
	}
	// A running tick this insert meets, after our commit, will see the events in its
	// re-check; a new job drains them.
	if err := e.svc.Wake(ctx, townID); err != nil {
		e.svc.logger.Warn("wake town after append; the sweep wakes it", "town_id", townID, "error", err)
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
