package db

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// QuietOptions choose the towns of a quiet batch.
type QuietOptions struct {
	// ActiveInterval is the cadence of a town with active work: a town whose next tick
	// lies further than this after its last is on the idle cadence.
	ActiveInterval time.Duration
	// EventRetention is the tick's event retention: a town with processed events older
	// than this has events to prune and gets a full tick.
	EventRetention time.Duration
	// Max bounds the towns of the batch.
	Max int
	// Exclude are towns not to take (an earlier batch left them to full ticks).
	Exclude []string
	// ListBusy: also list the due towns a quiet tick may not take (QuietBatch.Busy).
	ListBusy bool
}

// QuietBatch is a batch of due towns on the idle cadence, locked in one transaction,
// whose state nothing can have changed since their last tick (quiet_ticks.sql): the
// caller runs the rules on each snapshot and finishes the towns they find nothing to do
// in, with one statement for the whole batch. The statements of a batch do not grow with
// its size: one to lock, one round trip for the tick ids, the towns left out and every
// table of the snapshots, one to finish.
type QuietBatch struct {
	tx    pgx.Tx
	store *Store
	Now   time.Time
	Towns []QuietTown
	// Busy are due towns on the idle cadence that a quiet tick may not take: a full tick
	// has something to do there (QuietOptions.ListBusy).
	Busy []string
}

// QuietTown is one town of a quiet batch.
type QuietTown struct {
	TownID string
	TickID int64
	// DueAt is when the town was due (its next_tick_at).
	DueAt    time.Time
	Snapshot *reconciler.Snapshot
}

// QuietTick is a quiet tick to record: the town's next tick.
type QuietTick struct {
	TownID     string
	TickID     int64
	NextTickAt time.Time
}

// interval is d as a Postgres interval.
func interval(d time.Duration) pgtype.Interval {
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: true}
}

// LockQuietTowns locks up to opts.Max due quiet towns on tx and loads their snapshots, as
// of now (the ticks' clock).
func (s *Store) LockQuietTowns(ctx context.Context, tx pgx.Tx, now time.Time, opts QuietOptions) (*QuietBatch, error) {
	towns, err := s.q.QuietTownsLock(ctx, tx, dbsqlc.QuietTownsLockParams{
		Now: now, ActiveInterval: interval(opts.ActiveInterval), PruneBefore: now.Add(-opts.EventRetention), MaxRows: int32(opts.Max),
		Exclude: nonNil(opts.Exclude),
	})
	if err != nil {
		return nil, fmt.Errorf("lock quiet towns: %w", err)
	}
	b := &QuietBatch{tx: tx, store: s, Now: now}
	ids := make([]string, len(towns))
	since := now
	for i, t := range towns {
		ids[i] = t.TownID
		since = minTime(since, now.Add(-townConfig(t.Config).GUPPNudgeDedupe()))
	}
	var (
		p        pipeline
		tickIDs  []int64
		beads    []dbsqlc.Bead
		agents   []dbsqlc.Agent
		deps     []dbsqlc.QuietDependenciesRow
		reviews  []dbsqlc.ReviewMetadatum
		rigs     []dbsqlc.Rig
		convoys  []dbsqlc.ConvoyMetadatum
		nudges   []dbsqlc.QuietNudgesRow
		failures []dbsqlc.QuietDispatchFailuresRow
	)
	if opts.ListBusy {
		p.add(func(q Querier) (err error) {
			b.Busy, err = s.q.QuietTownsBusy(ctx, q, dbsqlc.QuietTownsBusyParams{
				Now: now, ActiveInterval: interval(opts.ActiveInterval), PruneBefore: now.Add(-opts.EventRetention), MaxRows: int32(opts.Max),
			})
			return
		})
	}
	if len(ids) > 0 {
		p.add(func(q Querier) (err error) { tickIDs, err = s.q.QuietTickIDs(ctx, q, int32(len(ids))); return })
		p.add(func(q Querier) (err error) { beads, err = s.q.QuietBeads(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) { agents, err = s.q.QuietAgents(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) { deps, err = s.q.QuietDependencies(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) { reviews, err = s.q.QuietReviews(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) { rigs, err = s.q.QuietRigs(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) { convoys, err = s.q.QuietConvoys(ctx, fastScan(q), ids); return })
		p.add(func(q Querier) (err error) {
			nudges, err = s.q.QuietNudges(ctx, q, dbsqlc.QuietNudgesParams{TownIds: ids, Since: since})
			return
		})
		p.add(func(q Querier) (err error) {
			// Every tick that applied these towns' events has committed (the batch holds
			// them), so every failure counts: the same count a full tick would read.
			failures, err = s.q.QuietDispatchFailures(ctx, q, dbsqlc.QuietDispatchFailuresParams{
				TownIds: ids, Since: now.Add(-reconciler.CircuitBreakerWindow), TickID: math.MaxInt64,
			})
			return
		})
	}
	if err := p.run(ctx, tx); err != nil {
		return nil, fmt.Errorf("load quiet towns: %w", err)
	}
	if len(tickIDs) != len(towns) {
		return nil, fmt.Errorf("quiet batch: %d tick ids for %d towns", len(tickIDs), len(towns))
	}
	byTown := make(map[string]*reconciler.Snapshot, len(towns))
	b.Towns = make([]QuietTown, len(towns))
	for i, t := range towns {
		snap := emptySnapshot(t)
		byTown[t.TownID] = snap
		b.Towns[i] = QuietTown{TownID: t.TownID, TickID: tickIDs[i], DueAt: t.NextTickAt, Snapshot: snap}
	}
	for i := range beads {
		s := byTown[beads[i].TownID]
		s.Beads = append(s.Beads, beadFromInternal(&beads[i]))
	}
	for _, a := range agents {
		s := byTown[a.TownID]
		s.Agents = append(s.Agents, agentFromInternal(a))
	}
	for _, d := range deps {
		s := byTown[d.TownID]
		s.Dependencies = append(s.Dependencies, reconciler.Dependency{BeadID: d.BeadID, DependsOnID: d.DependsOnBeadID, Type: reconciler.DependencyType(d.DependencyType)})
	}
	for _, r := range reviews {
		s := byTown[r.TownID]
		s.Reviews = append(s.Reviews, reviewFromInternal(r))
	}
	for _, r := range rigs {
		s := byTown[r.TownID]
		s.Rigs = append(s.Rigs, rigFromInternal(r))
	}
	for _, c := range convoys {
		s := byTown[c.TownID]
		s.Convoys = append(s.Convoys, convoyFromInternal(c))
	}
	for _, n := range nudges {
		s := byTown[n.TownID]
		if n.LastAt.Before(now.Add(-s.Config.GUPPNudgeDedupe())) {
			continue // inside the batch's window, outside this town's
		}
		s.Nudges = append(s.Nudges, reconciler.NudgeRecord{AgentID: n.AgentID, Source: n.Source, LastAt: n.LastAt})
	}
	for _, f := range failures {
		byTown[f.TownID].DispatchFailures = int(f.Failures)
	}
	return b, nil
}

// emptySnapshot is the snapshot of a town before its rows are read: the town row's part,
// and empty lists where LoadSnapshot makes them (rigs stay nil without one).
func emptySnapshot(t dbsqlc.Town) *reconciler.Snapshot {
	return &reconciler.Snapshot{
		TownID: t.TownID, Draining: t.Draining, DrainStartedAt: timeOrZero(t.DrainStartedAt), Config: townConfig(t.Config),
		Beads: []reconciler.Bead{}, Agents: []reconciler.Agent{}, Dependencies: []reconciler.Dependency{},
		Reviews: []reconciler.Review{}, Convoys: []reconciler.Convoy{}, Nudges: []reconciler.NudgeRecord{},
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Finish records the batch's quiet ticks — a reconciler_ticks row each, stamped with the
// batch's clock and its share of the batch's phase times — and schedules each town's next
// tick, in one statement. Towns of the batch not in ticks keep their schedule (the caller
// gives them a full tick once the batch commits).
func (b *QuietBatch) Finish(ctx context.Context, ticks []QuietTick, wall, snapshot, reconcile time.Duration) error {
	if len(ticks) == 0 {
		return nil
	}
	n := time.Duration(len(ticks))
	p := dbsqlc.QuietTicksFinishParams{
		TownIds: make([]string, len(ticks)), TickIds: make([]int64, len(ticks)), NextTickAts: make([]time.Time, len(ticks)),
		Now: &b.Now, WallClockUs: micros(wall / n), SnapshotUs: micros(snapshot / n), ReconcileUs: micros(reconcile / n),
	}
	for i, t := range ticks {
		p.TownIds[i], p.TickIds[i], p.NextTickAts[i] = t.TownID, t.TickID, t.NextTickAt
	}
	if err := b.store.q.QuietTicksFinish(ctx, b.tx, p); err != nil {
		return fmt.Errorf("finish quiet ticks: %w", err)
	}
	return nil
}
