package jobs

import (
	"context"
	"encoding/json"
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

// Sweep enqueues ticks for every due town and returns how many towns were due. Every
// QuietInterval it first runs the quiet ticks (QuietTicks) of the towns on the idle
// cadence; the towns those leave to a full tick join the due towns. Between those runs the
// sweep leaves such towns alone, unless one has waited three quiet intervals (a failing
// quiet run must not stop a town's cadence).
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.Ticker.clock()
	quietBefore := now // quiet ticks off: every due town gets a full tick
	var fallback []string
	if s.cfg.QuietInterval > 0 {
		quietBefore = now.Add(-3 * s.cfg.QuietInterval)
		if s.quietDue(now) {
			res, err := s.QuietTicks(ctx)
			if err != nil {
				s.logger.Error("quiet ticks failed; their towns get full ticks once overdue", "error", err)
			}
			fallback = res.Fallback
		}
	}
	ids, err := s.store.ListDueTowns(ctx, now, time.Now().Add(-s.cfg.SweepInterval), s.cfg.ActiveInterval, quietBefore, sweepBatch)
	if err != nil {
		return 0, err
	}
	ids = appendMissing(ids, fallback)
	if len(ids) == 0 {
		return 0, nil
	}
	// Towns with a tick waiting or running need no other: inserting River's unique job
	// for them would wait for their running ticks to commit.
	ticking, err := s.store.TownsWithTick(ctx, ids)
	if err != nil {
		return 0, err
	}
	params := make([]river.InsertManyParams, 0, len(ids))
	for _, id := range ids {
		if !ticking[id] {
			params = append(params, river.InsertManyParams{Args: TickTownArgs{TownID: id}})
		}
	}
	if len(params) > 0 {
		if _, err := s.Client.InsertMany(ctx, params); err != nil {
			return 0, fmt.Errorf("enqueue due ticks: %w", err)
		}
		s.announce.announce(QueueTicks)
	}
	return len(ids), nil
}

// orphanAfter is how long a tick job may be running before it is checked for a dead
// worker. Ticks take milliseconds and lock their town first thing; a job running this
// long whose town is not locked lost its worker (the process died, Postgres rolled the
// tick back).
const orphanAfter = 2 * time.Second

// recoverOrphanedTicks finishes tick jobs whose worker died and wakes their towns. River
// would leave such a job running until its rescuer (a minute or more), and meanwhile the
// town's appends and the sweep would count on it. Every worker process runs this each
// second (see Service.Start).
func (s *Service) recoverOrphanedTicks(ctx context.Context) error {
	res, err := s.Client.JobList(ctx, river.NewJobListParams().Kinds(TickTownArgs{}.Kind()).
		States(rivertype.JobStateRunning).First(1000))
	if err != nil {
		return fmt.Errorf("list running ticks: %w", err)
	}
	for _, j := range res.Jobs {
		if j.AttemptedAt == nil || time.Since(*j.AttemptedAt) < orphanAfter {
			continue
		}
		var args TickTownArgs
		if err := json.Unmarshal(j.EncodedArgs, &args); err != nil {
			continue
		}
		ticking, err := s.store.TownIsTicking(ctx, args.TownID)
		if err != nil || ticking {
			continue
		}
		won, err := s.store.CancelOrphanedTick(ctx, j.ID)
		if err != nil {
			return err
		}
		if !won {
			continue // it finished after all, or another process took it
		}
		s.logger.Warn("tick job lost its worker; cancelled, the town ticks again", "town_id", args.TownID, "job_id", j.ID)
		if err := s.Wake(ctx, args.TownID); err != nil {
			return err
		}
	}
	return nil
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

// quietDue reports whether the sweep at now runs quiet ticks: the first sweep of this
// process, then once per QuietInterval.
func (s *Service) quietDue(now time.Time) bool {
	s.quietMu.Lock()
	defer s.quietMu.Unlock()
	if !s.lastQuiet.IsZero() && now.Sub(s.lastQuiet) < s.cfg.QuietInterval {
		return false
	}
	s.lastQuiet = now
	return true
}

// appendMissing appends to ids the elements of more it does not hold.
func appendMissing(ids, more []string) []string {
	if len(more) == 0 {
		return ids
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for _, id := range more {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}
