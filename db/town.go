package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// Querier is what a query runs on: the pool, a connection or a transaction.
type Querier = dbsqlc.DBTX

// Town is a tenant as the API shows it.
type Town struct {
	ID             string                `json:"town_id"`
	Name           string                `json:"name"`
	Config         reconciler.TownConfig `json:"config"`
	Draining       bool                  `json:"draining"`
	DrainStartedAt *time.Time            `json:"drain_started_at,omitempty"`
	NextTickAt     time.Time             `json:"next_tick_at"`
	LastTickAt     *time.Time            `json:"last_tick_at,omitempty"`
	TickCount      int64                 `json:"tick_count"`
	CreatedAt      time.Time             `json:"created_at"`
}

func townFromInternal(t dbsqlc.Town) Town {
	return Town{
		ID:             t.TownID,
		Name:           t.Name,
		Config:         townConfig(t.Config),
		Draining:       t.Draining,
		DrainStartedAt: t.DrainStartedAt,
		NextTickAt:     t.NextTickAt,
		LastTickAt:     t.LastTickAt,
		TickCount:      t.TickCount,
		CreatedAt:      t.CreatedAt,
	}
}

// CreateTown creates a tenant. Creating the tenant is the one write that is not a fact
// applied by a tick: before it there is no town to tick.
func (s *Store) CreateTown(ctx context.Context, id, name string, cfg reconciler.TownConfig, now time.Time) (Town, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return Town{}, fmt.Errorf("encode town config: %w", err)
	}
	var t dbsqlc.Town
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if t, err = s.q.TownInsert(ctx, tx, dbsqlc.TownInsertParams{TownID: id, Name: name, Config: raw, Now: now}); err != nil {
			return fmt.Errorf("insert town: %w", err)
		}
		// The first checkpoint, before any tick: a replay of the whole history starts here.
		_, err := s.checkpointOutsideTick(ctx, tx, id, 0, now)
		return err
	})
	if err != nil {
		return Town{}, err
	}
	return townFromInternal(t), nil
}

// GetTown reads a town.
func (s *Store) GetTown(ctx context.Context, id string) (Town, error) {
	t, err := s.q.TownGet(ctx, s.Pool, id)
	if err != nil {
		return Town{}, interpretError(err)
	}
	return townFromInternal(t), nil
}

// ListTowns lists towns.
func (s *Store) ListTowns(ctx context.Context, limit int) ([]Town, error) {
	rows, err := s.q.TownList(ctx, s.Pool, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list towns: %w", err)
	}
	out := make([]Town, len(rows))
	for i, r := range rows {
		out[i] = townFromInternal(r)
	}
	return out, nil
}

// DeleteTown deletes a town and everything in it.
func (s *Store) DeleteTown(ctx context.Context, id string) error {
	n, err := s.q.TownDelete(ctx, s.Pool, id)
	if err != nil {
		return fmt.Errorf("delete town %s: %w", id, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ListDueTowns lists towns whose tick is due at now, or whose pending events are older
// than pendingBefore (a lost wake-up).
//
// Towns on the idle cadence (their next tick more than activeInterval after their last)
// that were due after quietBefore are left out: quiet ticks take them (LockQuietTowns).
func (s *Store) ListDueTowns(ctx context.Context, now, pendingBefore time.Time, activeInterval time.Duration, quietBefore time.Time, limit int) ([]string, error) {
	ids, err := s.q.TownListDue(ctx, s.Pool, dbsqlc.TownListDueParams{
		Now: now, PendingBefore: pendingBefore, ActiveInterval: interval(activeInterval), QuietBefore: quietBefore, MaxRows: int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list due towns: %w", err)
	}
	return ids, nil
}

// EnsureTickPartitions creates the daily reconciler_ticks partitions up to daysAhead.
func (s *Store) EnsureTickPartitions(ctx context.Context, daysAhead int) (int, error) {
	n, err := s.q.TickEnsurePartitions(ctx, s.Pool, int32(daysAhead))
	if err != nil {
		return 0, fmt.Errorf("ensure tick partitions: %w", err)
	}
	return int(n), nil
}

// GetRig reads one rig of a town.
func (s *Store) GetRig(ctx context.Context, townID, rigID string) (reconciler.Rig, error) {
	r, err := s.q.RigGet(ctx, s.Pool, dbsqlc.RigGetParams{TownID: townID, RigID: rigID})
	if err != nil {
		return reconciler.Rig{}, interpretError(err)
	}
	return rigFromInternal(r), nil
}

// ListRigs lists the rigs of a town.
func (s *Store) ListRigs(ctx context.Context, townID string) ([]reconciler.Rig, error) {
	rows, err := s.q.RigListByTown(ctx, s.Pool, townID)
	if err != nil {
		return nil, fmt.Errorf("list rigs: %w", err)
	}
	out := make([]reconciler.Rig, len(rows))
	for i, r := range rows {
		out[i] = rigFromInternal(r)
	}
	return out, nil
}

// GetBead reads one bead of a town.
func (s *Store) GetBead(ctx context.Context, townID, beadID string) (reconciler.Bead, error) {
	b, err := s.q.BeadGet(ctx, s.Pool, dbsqlc.BeadGetParams{TownID: townID, BeadID: beadID})
	if err != nil {
		return reconciler.Bead{}, interpretError(err)
	}
	return beadFromInternal(&b), nil
}

// BeadFilter narrows ListBeads; empty fields do not filter.
type BeadFilter struct {
	Type   reconciler.BeadType
	Status reconciler.BeadStatus
	RigID  string
	Limit  int
}

// ListBeads lists a town's beads, newest first.
func (s *Store) ListBeads(ctx context.Context, townID string, f BeadFilter) ([]reconciler.Bead, error) {
	rows, err := s.q.BeadList(ctx, s.Pool, dbsqlc.BeadListParams{
		TownID: townID, Type: ptr(string(f.Type)), Status: ptr(string(f.Status)), RigID: ptr(f.RigID), MaxRows: int32(f.Limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list beads: %w", err)
	}
	out := make([]reconciler.Bead, len(rows))
	for i, r := range rows {
		out[i] = beadFromInternal(&r)
	}
	return out, nil
}

// ListAgents lists the agents of a town.
func (s *Store) ListAgents(ctx context.Context, townID string) ([]reconciler.Agent, error) {
	rows, err := s.q.AgentListByTown(ctx, s.Pool, townID)
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	out := make([]reconciler.Agent, len(rows))
	for i, r := range rows {
		out[i] = agentFromInternal(r)
	}
	return out, nil
}

// GetAgent reads one agent of a town.
func (s *Store) GetAgent(ctx context.Context, townID, agentID string) (reconciler.Agent, error) {
	a, err := s.q.AgentGet(ctx, s.Pool, dbsqlc.AgentGetParams{TownID: townID, AgentID: agentID})
	if err != nil {
		return reconciler.Agent{}, interpretError(err)
	}
	return agentFromInternal(a), nil
}

// Tick is one reconciler_ticks row as the API shows it.
type Tick struct {
	ID                   int64          `json:"tick_id"`
	StartedAt            time.Time      `json:"started_at"` // the clock the tick reconciled with
	WallClockUS          int32          `json:"wall_clock_us"`
	EventsDrained        int32          `json:"events_drained"`
	EventsFailed         int16          `json:"events_failed"`
	EventsDead           int16          `json:"events_dead"`
	HeartbeatsApplied    int16          `json:"heartbeats_applied"`
	ActionsEmitted       int32          `json:"actions_emitted"`
	ActionsSkipped       int16          `json:"actions_skipped"`
	ActionsByType        map[string]int `json:"actions_by_type"`
	SideEffectsAttempted int16          `json:"side_effects_attempted"`
	SideEffectsSucceeded int16          `json:"side_effects_succeeded"`
	SideEffectsFailed    int16          `json:"side_effects_failed"`
	InvariantViolations  int16          `json:"invariant_violations"`
	PendingEventCount    int32          `json:"pending_event_count"`
	NextTickAt           time.Time      `json:"next_tick_at"`
}

// ListTicks lists a town's most recent ticks.
func (s *Store) ListTicks(ctx context.Context, townID string, limit int) ([]Tick, error) {
	rows, err := s.q.TickListByTown(ctx, s.Pool, dbsqlc.TickListByTownParams{TownID: townID, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list ticks: %w", err)
	}
	out := make([]Tick, len(rows))
	for i, r := range rows {
		t := Tick{
			ID: r.TickID, StartedAt: r.StartedAt, WallClockUS: r.WallClockUs,
			EventsDrained: r.EventsDrained, EventsFailed: r.EventsFailed, EventsDead: r.EventsDead,
			HeartbeatsApplied: r.HeartbeatsApplied, ActionsEmitted: r.ActionsEmitted, ActionsSkipped: r.ActionsSkipped,
			SideEffectsAttempted: r.SideEffectsAttempted, SideEffectsSucceeded: r.SideEffectsSucceeded,
			SideEffectsFailed: r.SideEffectsFailed, InvariantViolations: r.InvariantViolations,
			PendingEventCount: r.PendingEventCount,
			NextTickAt:        r.StartedAt.Add(time.Duration(r.NextTickMs) * time.Millisecond),
		}
		t.ActionsByType = decodeActionCounts(r.ActionsByType)
		out[i] = t
	}
	return out, nil
}

// TownIsTicking reports whether a tick holds the town right now. The probe takes the
// row lock for an instant (and gives it back) when nobody holds it.
func (s *Store) TownIsTicking(ctx context.Context, townID string) (bool, error) {
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin probe: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	ticking, err := s.q.TownIsTicking(ctx, tx, townID)
	if err != nil {
		return false, fmt.Errorf("probe town %s: %w", townID, err)
	}
	return ticking != nil && *ticking, nil
}
