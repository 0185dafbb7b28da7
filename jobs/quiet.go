package jobs

import (
	"context"
	"fmt"
	"time"

	"gastown/db"
	"gastown/reconciler"
)

// QuietResult is what one run of quiet ticks did.
type QuietResult struct {
	// Ticked towns had their quiet tick; Fallback towns need a full tick: the rules found
	// something to do there, or they have work a quiet tick may not take (db.QuietBatch.Busy).
	Ticked   int
	Fallback []string
}

// QuietTicks ticks the due towns on the idle cadence that nothing changed since their
// last tick, a batch at a time: one transaction locks up to Config.QuietBatch of them, loads
// their snapshots with one statement per table, runs the rules, the invariants and the
// active-work check on each in memory, and finishes every town they find nothing in with
// one statement (its reconciler_ticks row and next tick). The tick is the one a full tick
// would be — same rules on the same state, no input, no action, nothing recorded for
// replay — without a River job and a dozen statements per town. The other towns are
// returned for full ticks.
func (s *Service) QuietTicks(ctx context.Context) (QuietResult, error) {
	var (
		out      QuietResult
		rejected []string // towns the rules left to full ticks: no later batch takes them
	)
	for first := true; ; first = false {
		ticked, byRules, busy, seen, err := s.quietBatch(ctx, rejected, first)
		if err != nil {
			return out, err
		}
		out.Ticked += ticked
		rejected = append(rejected, byRules...)
		out.Fallback = appendMissing(appendMissing(out.Fallback, byRules), busy)
		if seen < s.cfg.QuietBatch {
			return out, nil
		}
	}
}

// quietBatch runs one batch, leaving out the towns of exclude. It returns the towns the
// rules left to full ticks, with listBusy the due towns a quiet tick may not take, and how
// many towns it locked.
func (s *Service) quietBatch(ctx context.Context, exclude []string, listBusy bool) (ticked int, byRules, busy []string, seen int, err error) {
	tx, err := s.store.Pool.Begin(ctx)
	if err != nil {
		return 0, nil, nil, 0, fmt.Errorf("begin quiet ticks: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	started := time.Now()
	now := s.Ticker.clock().UTC().Truncate(time.Microsecond)
	b, err := s.store.LockQuietTowns(ctx, tx, now, db.QuietOptions{
		ActiveInterval: s.cfg.ActiveInterval, EventRetention: s.cfg.EventRetention, Max: s.cfg.QuietBatch, Exclude: exclude,
		ListBusy: listBusy,
	})
	if err != nil {
		return 0, nil, nil, 0, err
	}
	loaded := time.Now()
	ticks := make([]db.QuietTick, 0, len(b.Towns))
	for _, t := range b.Towns {
		snap := t.Snapshot
		if len(reconciler.Reconcile(snap, reconciler.Options{}, now)) > 0 ||
			len(reconciler.CheckInvariants(snap)) > 0 || reconciler.HasActiveWork(snap, now) {
			byRules = append(byRules, t.TownID)
			continue
		}
		// The cadence is kept from when the town was due, not from when the batch ran.
		next := t.DueAt.Add(s.cfg.IdleInterval)
		if !next.After(now) {
			next = now.Add(s.cfg.IdleInterval)
		}
		ticks = append(ticks, db.QuietTick{TownID: t.TownID, TickID: t.TickID, NextTickAt: next})
	}
	reconciled := time.Now()
	wall, snapshot, reconcile := reconciled.Sub(started), loaded.Sub(started), reconciled.Sub(loaded)
	if err := b.Finish(ctx, ticks, wall, snapshot, reconcile); err != nil {
		return 0, nil, nil, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, nil, nil, 0, fmt.Errorf("commit quiet ticks: %w", err)
	}
	committed := time.Now()
	if n := time.Duration(len(ticks)); n > 0 {
		// Each quiet tick is reported with its share of the batch's phases.
		s.observer.QuietTicks(len(ticks))
		for _, t := range ticks {
			s.observer.TickObserved(wall/n, 0, snapshot/n, reconcile/n, 0)
			if s.onTick != nil {
				s.onTick(t.TownID, TickResult{
					TickID: t.TickID, ClockAt: now, NextTickAt: t.NextTickAt, Quiet: true,
					WallClock: wall / n, SnapshotTime: snapshot / n, ReconcileTime: reconcile / n,
					CommitTime: committed.Sub(reconciled), CommittedAt: committed,
				})
			}
		}
	}
	return len(ticks), byRules, b.Busy, len(b.Towns), nil
}
