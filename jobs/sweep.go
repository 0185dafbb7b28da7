package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"gastown/db"
)

// sweepBatch bounds how many towns one sweep enqueues.
const sweepBatch = 5000

// SweepArgs is the periodic sweep, run by the leader only: it enqueues ticks for towns
// whose next_tick_at is due (the 5 s / 5 min cadence) and for towns with pending events
// that no tick took (a lost wake-up, e.g. a process that died after committing events).
type SweepArgs struct{}

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return "sweep" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (SweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
			rivertype.JobStateRunning, rivertype.JobStateScheduled}}}
}

// SweepWorker runs the sweep.
type SweepWorker struct {
	river.WorkerDefaults[SweepArgs]
	svc *Service
}

// Work implements river.Worker.
func (w *SweepWorker) Work(ctx context.Context, _ *river.Job[SweepArgs]) error {
	_, err := w.svc.Sweep(ctx)
	return err
}

// Sweep enqueues ticks for every due town and returns how many towns were due.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.Ticker.clock()
	ids, err := s.store.ListDueTowns(ctx, now, time.Now().Add(-s.cfg.SweepInterval), sweepBatch)
	if err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: TickTownArgs{TownID: id}}
	}
	if _, err := s.Client.InsertMany(ctx, params); err != nil {
		return 0, fmt.Errorf("enqueue due ticks: %w", err)
	}
	return len(ids), nil
}

// RollupArgs folds complete minutes of reconciler_ticks into the per-minute rollup.
type RollupArgs struct{}

// Kind implements river.JobArgs.
func (RollupArgs) Kind() string { return "rollup_ticks" }

// RollupWorker runs the rollup, every minute on the leader.
type RollupWorker struct {
	river.WorkerDefaults[RollupArgs]
	svc *Service
}

// Work implements river.Worker.
func (w *RollupWorker) Work(ctx context.Context, _ *river.Job[RollupArgs]) error {
	_, err := w.svc.store.RollupTicks(ctx, time.Now(), w.svc.cfg.TickTimeout, w.svc.cfg.TickRetention)
	return err
}

// MaintenanceArgs is the hourly housekeeping of the fleet: reconciler_ticks partitions
// ahead of time, retention of ticks and of the rollup.
type MaintenanceArgs struct{}

// Kind implements river.JobArgs.
func (MaintenanceArgs) Kind() string { return "maintenance" }

// MaintenanceWorker runs maintenance.
type MaintenanceWorker struct {
	river.WorkerDefaults[MaintenanceArgs]
	svc *Service
}

// Work implements river.Worker.
func (w *MaintenanceWorker) Work(ctx context.Context, _ *river.Job[MaintenanceArgs]) error {
	res, err := w.svc.store.MaintainTicks(ctx, time.Now(), db.RetentionOptions{Ticks: w.svc.cfg.TickRetention, Rollup: w.svc.cfg.RollupRetention})
	if err != nil {
		return err
	}
	if res != (db.MaintenanceResult{}) {
		w.svc.logger.Info("reconciler_ticks maintenance", "partitions_created", res.PartitionsCreated,
			"partitions_dropped", res.PartitionsDropped, "rollup_rows_pruned", res.RollupRowsPruned)
	}
	return nil
}
