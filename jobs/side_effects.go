package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"gastown/agentrt"
	"gastown/codehost"
	"gastown/db"
	"gastown/reconciler"
)

// Timeouts of the side effects (SPEC.md §1.3, §5.5).
const (
	stopTimeout    = 10 * time.Second
	messageTimeout = 10 * time.Second
)

// sideEffectJob turns a side effect of a tick into its job.
func sideEffectJob(townID string, tickID int64, se db.SideEffect) river.InsertManyParams {
	switch se := se.(type) {
	case db.StartAgent:
		return river.InsertManyParams{Args: StartAgentArgs{TownID: townID, TickID: tickID, Request: agentrt.StartRequest{
			TownID: townID, AgentID: se.AgentID, AgentName: se.AgentName, Role: se.Role, BeadID: se.BeadID,
			BeadTitle: se.BeadTitle, BeadBody: se.BeadBody, RigID: se.RigID, GitURL: se.GitURL,
			DefaultBranch: se.DefaultBranch, Branch: se.Branch, TargetBranch: se.TargetBranch,
			MergeStrategy: se.MergeStrategy, PRURL: se.PRURL, ReviewMode: se.ReviewMode,
			SourceAgentID: se.SourceAgentID, Prompt: se.Prompt,
		}}}
	case db.StopAgentEffect:
		return river.InsertManyParams{Args: StopAgentArgs{TownID: townID, TickID: tickID, AgentID: se.AgentID, Reason: se.Reason}}
	case db.SendMessageEffect:
		return river.InsertManyParams{Args: SendMessageArgs{TownID: townID, TickID: tickID, AgentID: se.AgentID, Message: se.Message, NudgeID: se.NudgeID, MailBeadID: se.MailBeadID}}
	case db.PollPREffect:
		return river.InsertManyParams{Args: PollPRArgs{TownID: townID, TickID: tickID, MRBeadID: se.MRBeadID, PRURL: se.PRURL, WantFeedback: se.WantFeedback}}
	case db.MergePREffect:
		return river.InsertManyParams{Args: MergePRArgs{TownID: townID, TickID: tickID, MRBeadID: se.MRBeadID, PRURL: se.PRURL}}
	default:
		panic(fmt.Sprintf("no job for side effect %T", se))
	}
}

// outcomeKey is the idempotency key of a side-effect job's outcome event.
func outcomeKey(jobID int64) string { return fmt.Sprintf("job:%d", jobID) }

// Backoff of a report that failed (the first retry, and the cap it doubles up to).
const (
	reportRetryFirst = 50 * time.Millisecond
	reportRetryMax   = time.Second
)

// report appends a side effect's outcome, keyed by the job so that a retried job reports
// it at most once. The effect has happened by now: a report that fails (the database
// restarting, out of connections) is retried here for as long as the job may run, since
// an error would have River run the whole job again — a second start of the agent, a
// second message — for want of one event.
func (s *Service) reportOutcome(ctx context.Context, kind, townID string, jobID int64, ev db.NewEvent) error {
	if err := s.Ticker.at(ctx, "effect_done", townID); err != nil {
		return err
	}
	ev.IdempotencyKey = outcomeKey(jobID)
	outcome := "succeeded"
	switch ev.Type {
	case reconciler.EventAgentDispatchFailed, reconciler.EventNudgeDeliveryFailed, reconciler.EventMailDeliveryFailed,
		reconciler.EventPRPollFailed, reconciler.EventPRMergeFailed:
		outcome = "failed"
	}
	s.observer.SideEffect(kind, outcome)
	for wait := reportRetryFirst; ; wait = min(2*wait, reportRetryMax) {
		_, err := s.Events.Append(ctx, townID, ev)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, db.ErrTownNotFound):
			return nil // the town is gone; nothing to report to
		}
		s.logger.Warn("report of a side effect failed; retrying", "kind", kind, "town_id", townID, "job_id", jobID, "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// StopAgentArgs stops an agent's process.
type StopAgentArgs struct {
	TownID  string `json:"town_id"`
	TickID  int64  `json:"tick_id,omitempty"` // the tick that asked for it
	AgentID string `json:"agent_id"`
	Reason  string `json:"reason"`
}

// Kind implements river.JobArgs.
func (StopAgentArgs) Kind() string { return "stop_agent" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (StopAgentArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueSideEffects, MaxAttempts: 3}
}

// StopAgentWorker runs stop_agent jobs. A failed stop is retried by River (three attempts
// in all). Most rules that stop an agent emit the stop again on a later tick while their
// condition holds; GUPP's force stop does not (it fires once, on the move to stalled:
// SPEC.md §9 item 18), so its stop rests on those attempts, and the triage request it
// opens with it puts a person on the agent.
type StopAgentWorker struct {
	river.WorkerDefaults[StopAgentArgs]
	svc *Service
}

// Timeout implements river.Worker: the call's own bound and the time to report it.
func (w *StopAgentWorker) Timeout(*river.Job[StopAgentArgs]) time.Duration {
	return stopTimeout + reportTime
}

// Work implements river.Worker.
func (w *StopAgentWorker) Work(ctx context.Context, job *river.Job[StopAgentArgs]) error {
	stopCtx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	if err := w.svc.runtime.StopAgent(stopCtx, job.Args.TownID, job.Args.AgentID); err != nil {
		return fmt.Errorf("stop agent %s: %w", job.Args.AgentID, err)
	}
	return w.svc.reportOutcome(ctx, job.Kind, job.Args.TownID, job.ID, db.NewEvent{
		Type: reconciler.EventAgentStopped, AgentID: job.Args.AgentID, Payload: map[string]string{"reason": job.Args.Reason},
	})
}

// SendMessageArgs delivers a nudge or a mail bead to a running agent.
type SendMessageArgs struct {
	TownID     string `json:"town_id"`
	TickID     int64  `json:"tick_id,omitempty"` // the tick that asked for it
	AgentID    string `json:"agent_id"`
	Message    string `json:"message"`
	NudgeID    string `json:"nudge_id,omitempty"`
	MailBeadID string `json:"mail_bead_id,omitempty"`
}

// Kind implements river.JobArgs.
func (SendMessageArgs) Kind() string { return "send_message" }

// InsertOpts implements river.JobArgsWithInsertOpts. Not retried: an undelivered nudge
// stays queued for the agent to pull, undelivered mail is offered again by a later tick.
func (SendMessageArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueSideEffects, MaxAttempts: 1}
}

// SendMessageWorker runs send_message jobs.
type SendMessageWorker struct {
	river.WorkerDefaults[SendMessageArgs]
	svc *Service
}

// mailSuperseded reports whether a mail job that waited in a backed-up queue has nothing
// left to do: its mail was delivered meanwhile (the agent pulled it), or offered again by
// a later tick (db.MailReofferAfter), whose job delivers it instead — so a mail is not
// sent twice for want of one outcome.
func (w *SendMessageWorker) mailSuperseded(ctx context.Context, job *river.Job[SendMessageArgs]) (bool, error) {
	mail, err := w.svc.store.GetBead(ctx, job.Args.TownID, job.Args.MailBeadID)
	if errors.Is(err, db.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if mail.Status.Terminal() {
		return true, nil
	}
	requested, err := time.Parse(time.RFC3339Nano, mail.MetaString("delivery_requested_at"))
	return err == nil && requested.After(job.CreatedAt.Add(db.MailReofferAfter/2)), nil
}

// Timeout implements river.Worker: the call's own bound and the time to report it.
func (w *SendMessageWorker) Timeout(*river.Job[SendMessageArgs]) time.Duration {
	return messageTimeout + reportTime
}

// Work implements river.Worker.
func (w *SendMessageWorker) Work(ctx context.Context, job *river.Job[SendMessageArgs]) error {
	a := job.Args
	if a.MailBeadID != "" {
		if stale, err := w.mailSuperseded(ctx, job); err != nil || stale {
			return err
		}
	}
	sendCtx, cancel := context.WithTimeout(ctx, messageTimeout)
	err := w.svc.runtime.SendMessage(sendCtx, a.TownID, a.AgentID, a.Message)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p := reconciler.DeliveryPayload{NudgeID: a.NudgeID, BeadID: a.MailBeadID}
	ev := db.NewEvent{AgentID: a.AgentID, Payload: &p}
	switch {
	case a.NudgeID != "" && err == nil:
		ev.Type = reconciler.EventNudgeDelivered
	case a.NudgeID != "":
		ev.Type, p.Error = reconciler.EventNudgeDeliveryFailed, err.Error()
	case err == nil:
		ev.Type = reconciler.EventMailDelivered
	default:
		ev.Type, p.Error = reconciler.EventMailDeliveryFailed, err.Error()
	}
	return w.svc.reportOutcome(ctx, job.Kind, a.TownID, job.ID, ev)
}

// PollPRArgs polls an MR's PR and reports what it saw.
type PollPRArgs struct {
	TownID       string `json:"town_id"`
	TickID       int64  `json:"tick_id,omitempty"` // the tick that asked for it
	MRBeadID     string `json:"mr_bead_id"`
	PRURL        string `json:"pr_url"`
	WantFeedback bool   `json:"want_feedback"`
}

// Kind implements river.JobArgs.
func (PollPRArgs) Kind() string { return "poll_pr" }

// InsertOpts implements river.JobArgsWithInsertOpts. A poll is not retried: failures are
// counted by the tick, and R1 polls again after PRPollInterval.
func (PollPRArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueSideEffects, MaxAttempts: 1}
}

// PollPRWorker runs poll_pr jobs (SPEC.md §5.3, observation half: the tick decides).
type PollPRWorker struct {
	river.WorkerDefaults[PollPRArgs]
	svc *Service
}

// Timeout implements river.Worker: the code host's bound and the time to report (the
// client's default job timeout is the tick's, which may be no longer than the call).
func (w *PollPRWorker) Timeout(*river.Job[PollPRArgs]) time.Duration {
	return w.svc.cfg.CodeHostTimeout + reportTime
}

// Work implements river.Worker.
func (w *PollPRWorker) Work(ctx context.Context, job *river.Job[PollPRArgs]) error {
	a := job.Args
	ev, err := w.svc.pollPR(ctx, a)
	if err != nil {
		return err
	}
	return w.svc.reportOutcome(ctx, job.Kind, a.TownID, job.ID, ev)
}

func (s *Service) pollPR(ctx context.Context, a PollPRArgs) (db.NewEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CodeHostTimeout)
	defer cancel()
	st, err := s.codeHost.PRStatus(ctx, a.PRURL)
	if err != nil {
		return pollFailure(a.MRBeadID, err)
	}
	if st.State != "open" {
		return db.NewEvent{Type: reconciler.EventPRStatusChanged, BeadID: a.MRBeadID,
			Payload: reconciler.PRStatusChangedPayload{PRURL: a.PRURL, PRState: st.State}}, nil
	}
	p := reconciler.PRPolledPayload{MRBeadID: a.MRBeadID, PRURL: a.PRURL, State: st.State, MergeableState: st.MergeableState, StillOpen: true}
	if ref, err := codehost.ParsePRURL(a.PRURL); err == nil {
		p.PRNumber, p.Repo = ref.Number, ref.Owner+"/"+ref.Repo
	}
	if a.WantFeedback && st.MergeableState != "dirty" && st.MergeableState != "unknown" {
		f, err := s.codeHost.PRFeedback(ctx, a.PRURL)
		if err == nil {
			p.Feedback = &f
			if f.HasUnresolvedComments || f.HasFailingChecks || f.HasUncheckedRuns {
				// Re-check before asking for fixes: the PR may have closed meanwhile.
				if again, err := s.codeHost.PRStatus(ctx, a.PRURL); err == nil {
					p.StillOpen = again.State == "open"
				}
			}
		} else {
			s.logger.Warn("PR feedback unavailable", "pr_url", a.PRURL, "error", err)
		}
	}
	return db.NewEvent{Type: reconciler.EventPRPolled, BeadID: a.MRBeadID, Payload: p}, nil
}

// pollFailure turns a code-host error into a pr_poll_failed event.
func pollFailure(mrID string, err error) (db.NewEvent, error) {
	var he *codehost.Error
	if !errors.As(err, &he) {
		if errors.Is(err, context.Canceled) {
			return db.NewEvent{}, err
		}
		he = &codehost.Error{Kind: codehost.KindHTTPError, Transient: true, Msg: err.Error()}
	}
	return db.NewEvent{Type: reconciler.EventPRPollFailed, BeadID: mrID, Payload: reconciler.PRPollFailedPayload{
		MRBeadID: mrID, Kind: string(he.Kind), HTTPStatus: he.HTTPStatus, Transient: he.Transient, Message: he.Msg,
	}}, nil
}

// MergePRArgs merges an MR's PR after a fresh feedback check (SPEC.md §5.4).
type MergePRArgs struct {
	TownID   string `json:"town_id" river:"unique"`
	TickID   int64  `json:"tick_id,omitempty"` // the tick that asked for it (not part of the uniqueness)
	MRBeadID string `json:"mr_bead_id" river:"unique"`
	PRURL    string `json:"pr_url" river:"unique"`
}

// Kind implements river.JobArgs.
func (MergePRArgs) Kind() string { return "merge_pr" }

// InsertOpts implements river.JobArgsWithInsertOpts. Unique per MR while queued or
// running: R1 re-emits merge_pr every tick while the merge is pending.
func (MergePRArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueSideEffects, MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
			rivertype.JobStateRunning, rivertype.JobStateScheduled}}}
}

// MergePRWorker runs merge_pr jobs.
type MergePRWorker struct {
	river.WorkerDefaults[MergePRArgs]
	svc *Service
}

// Timeout implements river.Worker: the code host's bound and the time to report.
func (w *MergePRWorker) Timeout(*river.Job[MergePRArgs]) time.Duration {
	return w.svc.cfg.CodeHostTimeout + reportTime
}

// Work implements river.Worker.
func (w *MergePRWorker) Work(ctx context.Context, job *river.Job[MergePRArgs]) error {
	a := job.Args
	hostCtx, cancel := context.WithTimeout(ctx, w.svc.cfg.CodeHostTimeout)
	defer cancel()
	failed := func(reason string) error {
		return w.svc.reportOutcome(ctx, job.Kind, a.TownID, job.ID, db.NewEvent{Type: reconciler.EventPRMergeFailed, BeadID: a.MRBeadID,
			Payload: reconciler.PRMergeFailedPayload{MRBeadID: a.MRBeadID, Reason: reason}})
	}
	f, err := w.svc.codeHost.PRFeedback(hostCtx, a.PRURL)
	if err != nil {
		return failed("feedback check failed: " + err.Error())
	}
	if !f.Green() {
		return failed("PR is no longer green")
	}
	if err := w.svc.codeHost.MergePR(hostCtx, a.PRURL); err != nil {
		return failed("merge refused: " + err.Error())
	}
	return w.svc.reportOutcome(ctx, job.Kind, a.TownID, job.ID, db.NewEvent{Type: reconciler.EventPRStatusChanged, BeadID: a.MRBeadID,
		Payload: reconciler.PRStatusChangedPayload{PRURL: a.PRURL, PRState: "merged"}})
}
