package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"gastown/agentrt"
	"gastown/db"
	"gastown/reconciler"
)

// QueueSideEffects is the queue of side-effect jobs.
const QueueSideEffects = "side_effects"

// reportTime is what a side-effect job allows, past its call's own timeout (an agent
// start's Config.StartTimeout, by default the reference's 60 s container start timeout,
// SPEC.md §5.5; a code-host call's Config.CodeHostTimeout; a stop's or a message's 10 s),
// to report the outcome: River's job timeout is the call's plus this.
const reportTime = 5 * time.Second

// StartAgentArgs asks the agent runtime to start an agent. It is inserted by the tick that
// dispatched the agent, in the tick's transaction, and reports the outcome as an event.
type StartAgentArgs struct {
	TownID  string               `json:"town_id"`
	TickID  int64                `json:"tick_id"`
	Request agentrt.StartRequest `json:"request"`
}

// Kind implements river.JobArgs.
func (StartAgentArgs) Kind() string { return "start_agent" }

// InsertOpts implements river.JobArgsWithInsertOpts. A failed start is reported, not
// retried: the reconciler decides (A1, B3, R6 with backoff). River runs the job again
// only when an attempt ended without finishing (its process died, its report failed);
// an attempt whose outcome was recorded already does not start the agent again.
func (StartAgentArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueSideEffects, MaxAttempts: 3}
}

// StartAgentWorker runs start_agent jobs.
type StartAgentWorker struct {
	river.WorkerDefaults[StartAgentArgs]
	svc *Service
}

// Timeout implements river.Worker.
func (w *StartAgentWorker) Timeout(*river.Job[StartAgentArgs]) time.Duration {
	return w.svc.cfg.StartTimeout + reportTime
}

// Work implements river.Worker.
func (w *StartAgentWorker) Work(ctx context.Context, job *river.Job[StartAgentArgs]) error {
	req := job.Args.Request
	if job.Attempt > 1 {
		// An earlier attempt may have started the agent and reported it, then died before
		// River recorded the job complete (or River's asynchronous commit of that was lost).
		reported, err := w.svc.store.EventKeyExists(ctx, job.Args.TownID, outcomeKey(job.ID))
		if err != nil {
			return err
		}
		if reported {
			w.svc.logger.Info("agent start reported by an earlier attempt; not started again", "town_id", job.Args.TownID, "agent_id", req.AgentID, "job_id", job.ID)
			return nil
		}
	}
	if w.svc.tokens != nil {
		// Minted when the start runs, so no credential rests in the job table.
		req.Token = w.svc.tokens.Issue(req.TownID, req.AgentID, time.Now().Add(w.svc.cfg.AgentTokenTTL))
	}
	startCtx, cancel := context.WithTimeout(ctx, w.svc.cfg.StartTimeout)
	err := w.svc.runtime.StartAgent(startCtx, req)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: River retries the job
	}
	ev := db.NewEvent{
		Type: reconciler.EventAgentDispatched, AgentID: req.AgentID,
		Payload: reconciler.AgentDispatchedPayload{BeadID: req.BeadID},
	}
	if err != nil {
		ev.Type = reconciler.EventAgentDispatchFailed
		ev.Payload = reconciler.AgentDispatchedPayload{BeadID: req.BeadID, Error: err.Error(), Permanent: agentrt.IsPermanent(err)}
		w.svc.logger.Warn("agent start failed", "town_id", job.Args.TownID, "agent_id", req.AgentID, "error", err)
	}
	if err := w.svc.reportOutcome(ctx, job.Kind, job.Args.TownID, job.ID, ev); err != nil {
		return fmt.Errorf("report start of agent %s: %w", req.AgentID, err)
	}
	return nil
}
