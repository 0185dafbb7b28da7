package db

import (
	"context"
	"fmt"
	"github.com/jackc/pgx/v5/pgtype"
	"time"

	"gastown/db/internal/dbsqlc"
)

// RetentionOptions bound what the fleet keeps.
type RetentionOptions struct {
	// Ticks is how long reconciler_ticks rows are kept (whole daily partitions).
	Ticks time.Duration
	// Rollup is how long the per-minute rollup is kept.
	Rollup time.Duration
}

// MaintenanceResult counts what a maintenance run did.
type MaintenanceResult struct {
	PartitionsCreated int
	PartitionsDropped int
	RollupRowsPruned  int
}

// MaintainTicks keeps reconciler_ticks' daily partitions a week ahead, drops the ones past
// the retention (never waiting long for a lock), and prunes the rollup past its retention
// in bounded batches.
func (s *Store) MaintainTicks(ctx context.Context, now time.Time, opts RetentionOptions) (MaintenanceResult, error) {
	var res MaintenanceResult
	var err error
	if res.PartitionsCreated, err = s.EnsureTickPartitions(ctx, 7); err != nil {
		return res, err
	}
	dropped, err := s.q.TickDropPartitionsBefore(ctx, s.Pool, pgtype.Date{Time: now.Add(-opts.Ticks).UTC(), Valid: true})
	if err != nil {
		return res, fmt.Errorf("drop old tick partitions: %w", err)
	}
	res.PartitionsDropped = int(dropped)
	for {
		n, err := s.q.RollupPrune(ctx, s.Pool, dbsqlc.RollupPruneParams{Before: now.Add(-opts.Rollup), MaxRows: 5000})
		if err != nil {
			return res, fmt.Errorf("prune rollup: %w", err)
		}
		res.RollupRowsPruned += int(n)
		if n < 5000 {
			return res, nil
		}
	}
}

// RollupTicks folds the ticks of complete minutes into reconciler_ticks_minutely. It
// re-rolls the last few minutes each run (the fold is idempotent), so a tick that committed
// late is still counted; ticks younger than settle are left for the next run.
func (s *Store) RollupTicks(ctx context.Context, now time.Time, settle, retention time.Duration) (int, error) {
	to := now.Add(-settle).Truncate(time.Minute)
	from, err := s.q.RollupWatermark(ctx, s.Pool, now.Add(-retention).Truncate(time.Minute))
	if err != nil {
		return 0, fmt.Errorf("read rollup watermark: %w", err)
	}
	from = from.Add(-2 * time.Minute)
	if !from.Before(to) {
		return 0, nil
	}
	n, err := s.q.RollupTicksMinutely(ctx, s.Pool, dbsqlc.RollupTicksMinutelyParams{FromAt: from, ToAt: to})
	if err != nil {
		return 0, fmt.Errorf("roll up ticks: %w", err)
	}
	if err := s.q.RollupSetWatermark(ctx, s.Pool, to); err != nil {
		return 0, fmt.Errorf("set rollup watermark: %w", err)
	}
	return int(n), nil
}
