package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivershared/uniquestates"
	"github.com/riverqueue/river/rivertype"

	"gastown/db"
	"gastown/reconciler"
)

// TickTownArgs is the job of one town tick.
//
// Tick jobs are unique per town across River's required states (available, pending,
// running, scheduled) plus retryable, so a burst of events queues at most one tick while
// another runs. Because a running tick also blocks the insert, a fact committed during a
// tick can find its wake-up skipped; the tick therefore re-checks for newer pending
// events once it has committed, and Events.Append retries its wake-up after its own
// commit when it met a running tick (see Events.Append). The sweep is the last resort.
type TickTownArgs struct {
	TownID string `json:"town_id"`
}

// Kind implements river.JobArgs.
func (TickTownArgs) Kind() string { return "tick_town" }

// tickJob is the row River's insert of a town's tick job writes: an append that finds no
// tick of its town inserts it within its own statement (db.TickJob). River's unique key
// for ByArgs is the SHA-256 of "&kind=KIND&args=ARGS", ARGS the encoded args with sorted
// keys (one key here); TestAppendEnqueuesTheTickRiverWould checks that River takes the
// row for its own and that every column matches a row River inserted.
func tickJob(townID string) (*db.TickJob, error) {
	a := TickTownArgs{TownID: townID}
	args, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	opts := a.InsertOpts()
	key := sha256.Sum256([]byte("&kind=" + a.Kind() + "&args=" + string(args)))
	return &db.TickJob{
		Args: args, Kind: a.Kind(), MaxAttempts: int16(opts.MaxAttempts), Priority: 1, Queue: opts.Queue,
		UniqueKey: key[:], UniqueStates: uniquestates.UniqueStatesToBitmask(opts.UniqueOpts.ByState),
	}, nil
}

// QueueTicks is the queue of tick jobs.
const QueueTicks = "ticks"

// InsertOpts implements river.JobArgsWithInsertOpts.
func (TickTownArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueTicks,
		MaxAttempts: 100,
		UniqueOpts: river.UniqueOpts{
			ByArgs: true,
			ByState: []rivertype.JobState{
				rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
				rivertype.JobStateScheduled, rivertype.JobStateRetryable,
			},
		},
	}
}

// TickTownWorker runs tick_town jobs: one tick in one transaction that also completes the
// job, then a wake-up if events are waiting.
type TickTownWorker struct {
	river.WorkerDefaults[TickTownArgs]
	svc *Service
}

// Backoff of a tick job whose tick failed: short and capped. While the job waits to be
// retried it is the town's one tick job (retryable is among its unique states), so no
// append, wake-up or sweep can give the town another; River's default backoff (attempt⁴
// seconds: 10 min at the fifth failure, an hour at the eighth) would leave a town whose
// ticks failed for a while (a database restart, timeouts under load) that long without a
// tick after the cause is gone.
const (
	tickRetryFirst = 100 * time.Millisecond
	tickRetryMax   = 5 * time.Second
)

// NextRetry implements river.Worker.
func (w *TickTownWorker) NextRetry(job *river.Job[TickTownArgs]) time.Time {
	return time.Now().Add(tickRetryDelay(job.Attempt))
}

// tickRetryDelay doubles from tickRetryFirst with each failed attempt, up to tickRetryMax.
func tickRetryDelay(attempt int) time.Duration {
	return min(tickRetryFirst<<min(max(attempt-1, 0), 10), tickRetryMax)
}

// Work implements river.Worker.
func (w *TickTownWorker) Work(ctx context.Context, job *river.Job[TickTownArgs]) error {
	townID := job.Args.TownID
	res, err := w.svc.tickAndComplete(ctx, job)
	switch {
	case errors.Is(err, db.ErrTownBusy):
		w.svc.observer.TickOutcome("busy")
		// The snoozed job is available again after BusyRetry; the tick queue's poll
		// (TickPollInterval) or the next announcement fetches it.
		return river.JobSnooze(w.svc.cfg.BusyRetry)
	case errors.Is(err, db.ErrNotFound):
		w.svc.observer.TickOutcome("gone")
		w.svc.logger.Info("tick for a town that no longer exists", "town_id", townID)
		return nil
	case err != nil:
		w.svc.observer.TickOutcome("error")
		return err
	}
	// The tick and the job completion are committed. Events that arrived while it ran
	// may have found their wake-up skipped: the tick looked for them in the round trip of
	// its commit.
	if res.RecheckErr != nil {
		w.svc.logger.Warn("check for events after tick", "town_id", townID, "error", res.RecheckErr)
		return nil // the tick is committed; the sweep finds the rest
	}
	if res.Drain.More || res.PendingAfterCommit {
		if err := w.svc.Wake(ctx, townID); err != nil {
			w.svc.logger.Warn("wake town after tick", "town_id", townID, "error", err)
		}
	}
	return nil
}

// tickAndComplete runs the tick and completes the job in the same transaction, which the
// tick commits with its last writes: BEGIN rides with the tick's first statements and
// COMMIT with its last, followed by the look for events that arrived meanwhile.
func (s *Service) tickAndComplete(ctx context.Context, job *river.Job[TickTownArgs]) (TickResult, error) {
	tx, err := s.store.BeginPipelined(ctx)
	if err != nil {
		return TickResult{}, fmt.Errorf("begin tick: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	townID := job.Args.TownID
	var completed time.Time
	res, err := s.Ticker.Tick(ctx, tx, townID, TickOptions{Commit: true, Complete: func(ctx context.Context, etx pgx.Tx) error {
		if err := s.Ticker.at(ctx, "recorded", townID); err != nil {
			return err
		}
		// In the same round trip as the tick's rows.
		if err := db.CompleteTickJob(ctx, etx, job.ID); err != nil {
			return err
		}
		completed = time.Now()
		return nil
	}})
	if err != nil {
		return res, err
	}
	if completed.IsZero() || !res.Committed {
		return res, fmt.Errorf("tick of town %s returned without completing its job and committing", townID)
	}
	commitStart := completed
	if err := s.Ticker.at(ctx, "committed", townID); err != nil {
		return res, err
	}
	res.CommittedAt = time.Now()
	res.CommitTime = res.CommittedAt.Sub(commitStart)
	if len(res.SideEffects) > 0 {
		s.announce.announce(QueueSideEffects)
	}
	s.report(job.Args.TownID, res)
	if s.onTick != nil {
		s.onTick(job.Args.TownID, res)
	}
	return res, nil
}

// report tells the metrics, the logs and the reporter what operators must know about a
// committed tick.
func (s *Service) report(townID string, res TickResult) {
	o := s.observer
	o.TickObserved(res.WallClock, res.DrainTime, res.SnapshotTime, res.ReconcileTime, res.ApplyTime)
	o.EventsDrained(res.Drain.Applied, res.Drain.Failed, res.Drain.Dead)
	emitted := map[string]int{}
	for t, n := range reconciler.CountByType(res.Actions) {
		emitted[string(t)] = n
	}
	skipped := map[string]int{}
	for t, n := range res.Apply.SkippedByType {
		skipped[string(t)] = n
	}
	o.Actions(emitted, skipped)
	for _, se := range res.SideEffects {
		o.SideEffect(sideEffectJob(townID, res.TickID, se).Args.Kind(), "requested")
	}
	for _, v := range res.NewViolations {
		o.ViolationStarted(strconv.Itoa(v.Invariant))
	}
	for _, f := range res.Drain.Failures {
		lvl := slog.LevelWarn
		if f.Dead {
			lvl = slog.LevelError
			s.Ticker.reporter.EventDead(townID, f)
		}
		s.logger.Log(context.Background(), lvl, "event failed to apply", "town_id", townID, "tick_id", res.TickID,
			"seq", f.Event.Seq, "type", f.Event.Type, "attempts", f.Event.Attempts+1, "dead", f.Dead, "error", f.Err)
	}
	for _, v := range res.NewViolations {
		s.logger.Error("invariant violated", "town_id", townID, "tick_id", res.TickID, "invariant", v.Invariant, "message", v.Message)
		s.Ticker.reporter.InvariantViolated(townID, v)
	}
}
