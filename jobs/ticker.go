package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"gastown/db"
	"gastown/reconciler"
)

// Ticker runs ticks: the one implementation of DESIGN.md §1 steps 1–5, used by the
// tick_town worker and by the API's dry-run (inside a transaction it rolls back).
type Ticker struct {
	store  *db.Store
	cfg    Config
	clock  func() time.Time
	logger *slog.Logger
	// insert puts side-effect jobs into the tick's transaction (the outbox); nil in a
	// process without a River client that can insert.
	insert func(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) error
	// reporter hears about poison events and invariant violations.
	reporter Reporter
	// failEvent injects apply failures (tests of the poison path).
	failEvent func(db.Event) error
	// failpoint runs at the named stages of ticks and side-effect jobs (Stages); an error
	// aborts the tick or job. Tests use it to fail a tick midway or hold one open, the
	// chaos build to kill its process there.
	failpoint func(ctx context.Context, stage, townID string) error
	// omitRow, when it returns true, skips the tick's reconciler_ticks row (benchmarks).
	omitRow func() bool
}

// Reporter hears about what operators must know: poison events and invariant violations.
type Reporter interface {
	EventDead(townID string, f db.EventFailure)
	InvariantViolated(townID string, v reconciler.Violation)
}

// Observer hears about every tick and side effect (Prometheus metrics).
type Observer interface {
	TickObserved(total, drain, snapshot, reconcile, apply time.Duration)
	TickOutcome(outcome string)
	QuietTicks(n int)
	EventsDrained(applied, failed, dead int)
	Actions(emitted, skipped map[string]int)
	SideEffect(kind, outcome string)
	ViolationStarted(invariant string)
}

type nopObserver struct{}

func (nopObserver) TickObserved(_, _, _, _, _ time.Duration) {}
func (nopObserver) TickOutcome(string)                       {}
func (nopObserver) QuietTicks(int)                           {}
func (nopObserver) EventsDrained(_, _, _ int)                {}
func (nopObserver) Actions(_, _ map[string]int)              {}
func (nopObserver) SideEffect(_, _ string)                   {}
func (nopObserver) ViolationStarted(string)                  {}

type nopReporter struct{}

func (nopReporter) EventDead(string, db.EventFailure)              {}
func (nopReporter) InvariantViolated(string, reconciler.Violation) {}

// TickOptions choose how a tick runs.
type TickOptions struct {
	// DryRun waits for the town lock (bounded by the session's lock_timeout) instead of
	// backing off, and inserts no side-effect jobs. The caller rolls the transaction back.
	DryRun bool
	// Replay re-runs a recorded tick (implies DryRun): its tick id and clock, its
	// heartbeats instead of the unapplied ones, its failed events failing again. The
	// caller has made exactly the tick's events pending. Nothing is recorded.
	Replay *db.RecordedTick
	// Reconcile replaces the rules (a what-if replay, or a test's changed rule).
	Reconcile func(s *reconciler.Snapshot, o reconciler.Options, now time.Time) []reconciler.Action
	// Complete runs at the end of the tick, on its transaction, its first statement in the
	// same round trip as the tick's last writes (the worker completes the River job).
	Complete func(ctx context.Context, tx pgx.Tx) error
	// Commit commits the tick's transaction, a *db.PipelinedTx, in the round trip of its
	// last writes, and then looks for events that arrived meanwhile (TickResult.Committed,
	// PendingAfterCommit). Without it the caller commits.
	Commit bool
}

// TickResult is what one tick did.
type TickResult struct {
	TickID     int64
	ClockAt    time.Time
	Drain      db.DrainResult
	Heartbeats []db.HeartbeatInput
	Actions    []reconciler.Action
	Apply      db.ApplyResult
	// Housekeeping is what SPEC.md §1.3 step 12 did in this tick.
	Housekeeping db.HousekeepingResult
	Violations   []reconciler.Violation
	// NewViolations are the violations that started in this tick (reported once).
	NewViolations []reconciler.Violation
	// SideEffects are the jobs the tick inserted (or, in a dry run, would insert).
	SideEffects       []db.SideEffect
	PendingEventCount int
	ActiveWork        bool
	NextTickAt        time.Time
	WallClock         time.Duration
	// Phase timings of the tick. CommitTime (the job's completion and the commit) and
	// CommittedAt are set once a worker has committed the tick.
	DrainTime, SnapshotTime, ReconcileTime, ApplyTime, CommitTime time.Duration
	CommittedAt                                                   time.Time
	// LastSeq is the sequence number of the last event the tick drained (0: none).
	LastSeq int64
	// StateChanged: the tick applied an event or heartbeat, or its actions or housekeeping
	// changed the state; StateHash fingerprints the state it left (reconciler.StateHash).
	StateChanged bool
	StateHash    uint64
	StateParts   []uint64
	// Quiet: a quiet tick (Service.QuietTicks), one of a batch of idle towns.
	Quiet bool
	// Committed: the tick committed its transaction (TickOptions.Commit). Then
	// PendingAfterCommit tells whether events wait that the tick did not drain: those
	// after LastSeq or never tried (looked for unless Drain.More); RecheckErr is that
	// look's error.
	Committed          bool
	PendingAfterCommit bool
	RecheckErr         error
}

// Tick runs one tick of a town on tx. It returns db.ErrTownBusy when another tick holds
// the town, db.ErrNotFound when the town does not exist. The caller commits or rolls back.
func (t *Ticker) Tick(ctx context.Context, tx pgx.Tx, townID string, opts TickOptions) (TickResult, error) {
	replay := opts.Replay
	if replay != nil {
		opts.DryRun = true
	}
	tt, err := t.store.BeginTick(ctx, tx, townID, opts.DryRun, t.cfg.DrainBatch, t.logger)
	if err != nil {
		return TickResult{}, err
	}
	// The tick's time starts once it holds the town, so the [start, start + wall clock]
	// ranges of a town's ticks are disjoint (the fleet tests check it). The clock it
	// reconciles with is at the microseconds Postgres stores: the record of the tick then
	// holds exactly the clock a replay re-runs it with.
	started := time.Now()
	now := t.clock().UTC().Truncate(time.Microsecond)
	failEvent := t.failEvent
	if replay != nil {
		now = replay.ClockAt.UTC()
		tt.TickID = replay.TickID // new ids derive from it
		failEvent = replayFailures(replay.FailedSeqs)
	}
	tt.Now = now
	reconcile := reconciler.Reconcile
	if opts.Reconcile != nil {
		reconcile = opts.Reconcile
	}
	res := TickResult{TickID: tt.TickID, ClockAt: now}

	// Phase 0: recorded inputs — heartbeats since the last tick, then pending events.
	if err := tt.CheckDrainTimeout(ctx); err != nil {
		return res, err
	}
	if replay != nil {
		res.Heartbeats = replay.Heartbeats
		err = tt.ApplyRecordedHeartbeats(ctx, replay.Heartbeats)
	} else {
		res.Heartbeats, err = tt.ApplyHeartbeats(ctx)
	}
	if err != nil {
		return res, err
	}
	drain := db.DrainOptions{MaxEvents: t.cfg.DrainBatch, MaxAttempts: t.cfg.MaxEventAttempts, FailEvent: failEvent}
	if replay != nil {
		// Only the recorded tick's events: the live system may append others meanwhile,
		// and this transaction sees every commit (read committed).
		drain.Only = append(append([]int64{}, replay.AppliedSeqs...), replay.FailedSeqs...)
	}
	if res.Drain, err = tt.DrainEvents(ctx, drain); err != nil {
		return res, err
	}
	drained := time.Now()
	if err := t.at(ctx, "drained", townID); err != nil {
		return res, err
	}

	// Phase 1: snapshot, pure reconcile, apply with preconditions.
	snap, err := tt.LoadSnapshot(ctx)
	if err != nil {
		return res, err
	}
	loaded := time.Now()
	res.Actions = reconcile(snap, reconciler.Options{Draining: tt.Draining()}, now)
	reconciled := time.Now()
	if res.Apply, err = tt.ApplyActions(ctx, res.Actions); err != nil {
		return res, err
	}
	// Invariants and the next tick look at the state the actions left: the snapshot itself
	// when nothing changed it (no action applied, no housekeeping write that the rules see)
	// — most ticks of idle towns — else the tables written, read again (with housekeeping's
	// look for work, when the actions wrote them).
	after := snap
	if res.Apply.Applied > 0 {
		res.Housekeeping, after, err = tt.HousekeepingAndState(ctx, t.cfg.EventRetention)
	} else if res.Housekeeping, err = tt.Housekeeping(ctx, t.cfg.EventRetention); err == nil && res.Housekeeping.ChangedState() {
		after, err = tt.LoadState(ctx)
	}
	if err != nil {
		return res, err
	}
	res.SideEffects = tt.SideEffects()
	if len(res.SideEffects) > 0 && !opts.DryRun {
		if t.insert == nil {
			return res, fmt.Errorf("tick of town %s has side effects but no job inserter", townID)
		}
		params := make([]river.InsertManyParams, len(res.SideEffects))
		for i, se := range res.SideEffects {
			params[i] = sideEffectJob(townID, tt.TickID, se)
		}
		// River's insert goes out with the writes held back, in one round trip.
		if err := t.insert(ctx, tt.Tx(), params); err != nil {
			return res, fmt.Errorf("insert side-effect jobs: %w", err)
		}
	}
	applied := time.Now()
	if err := t.at(ctx, "applied", townID); err != nil {
		return res, err
	}

	res.StateChanged = res.Drain.Applied > 0 || len(res.Heartbeats) > 0 || after != snap
	if res.StateChanged || len(res.Actions) > 0 || res.Drain.Drained > 0 || res.Housekeeping.CheckpointNeeded {
		digest := reconciler.StateDigestOf(after) // for the tick's record (an idle tick has none)
		res.StateHash, res.StateParts = digest.Sum(), digest.Parts()
	}
	res.Violations = reconciler.CheckInvariants(after)
	if res.NewViolations, err = tt.RecordViolations(ctx, res.Violations); err != nil {
		return res, err
	}
	res.ActiveWork = reconciler.HasActiveWork(after, now)
	if res.PendingEventCount, err = tt.PendingEventCount(ctx); err != nil {
		return res, err
	}
	interval := t.cfg.IdleInterval
	if res.ActiveWork {
		interval = t.cfg.ActiveInterval
	}
	res.NextTickAt = now.Add(interval)
	if res.Drain.More {
		res.NextTickAt = now
	}
	res.LastSeq = tt.LastDrainedSeq()
	res.WallClock = time.Since(started)
	res.DrainTime, res.SnapshotTime = drained.Sub(started), loaded.Sub(drained)
	res.ReconcileTime, res.ApplyTime = reconciled.Sub(loaded), applied.Sub(reconciled)
	if replay != nil {
		return res, nil // a replay records nothing
	}
	rec := db.TickRecord{
		WallClock: res.WallClock,
		Drain:     res.DrainTime, Snapshot: res.SnapshotTime, Reconcile: res.ReconcileTime, Apply: res.ApplyTime,
		EventsDrained: res.Drain.Drained, EventsFailed: res.Drain.Failed, EventsDead: res.Drain.Dead,
		Heartbeats: res.Heartbeats, ActionsEmitted: len(res.Actions), ActionsSkipped: res.Apply.Skipped,
		ActionsByType: reconciler.CountByType(res.Actions), SideEffectsAttempted: len(res.SideEffects),
		SideEffectsSucceeded: res.Drain.SideEffectsSucceeded, SideEffectsFailed: res.Drain.SideEffectsFailed,
		InvariantViolations: len(res.Violations), PendingEventCount: res.PendingEventCount,
		NextTickAt: res.NextTickAt, OmitRow: t.omitRow != nil && t.omitRow(), Complete: opts.Complete,
		FailedSeqs: failedSeqs(res.Drain.Failures), Actions: res.Actions, StateChanged: res.StateChanged, StateHash: res.StateHash, StateParts: res.StateParts,
	}
	if opts.Commit {
		rec.Commit = &db.TickCommit{Recheck: !res.Drain.More}
	}
	needed := res.Housekeeping.CheckpointNeeded
	if !opts.DryRun && (needed || (rec.Recorded() && tt.CheckpointDue(t.cfg.CheckpointEvery, t.cfg.CheckpointInterval))) {
		if err := tt.Checkpoint(ctx, res.StateHash); err != nil {
			return res, err
		}
		rec.Checkpointed = true
	}
	if err := tt.Finish(ctx, rec); err != nil {
		return res, err
	}
	if c := rec.Commit; c != nil {
		res.Committed, res.PendingAfterCommit, res.RecheckErr = c.Committed, c.PendingAfter, c.RecheckErr
	}
	return res, nil
}

// replayFailures fails the events a recorded tick failed, as it did.
func replayFailures(seqs []int64) func(db.Event) error {
	return func(e db.Event) error {
		if slices.Contains(seqs, e.Seq) {
			return fmt.Errorf("event %d failed in the recorded tick", e.Seq)
		}
		return nil
	}
}

// failedSeqs lists the sequence numbers of the events a drain took but did not apply.
func failedSeqs(fs []db.EventFailure) []int64 {
	out := make([]int64, len(fs))
	for i, f := range fs {
		out[i] = f.Event.Seq
	}
	return out
}

func (t *Ticker) at(ctx context.Context, stage, townID string) error {
	if t.failpoint == nil {
		return nil
	}
	return t.failpoint(ctx, stage, townID)
}
