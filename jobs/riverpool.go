package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// riverPoolMaxConns bounds River's own pool: its listener holds one connection; its three
// queues' producers (one fetch at a time each), completer, elector and maintenance
// services hold one only for a statement.
const riverPoolMaxConns = 6

// NewRiverPool opens the pool a working River client runs its own statements on
// (Deps.RiverPool): base's settings with commits that do not wait for their WAL flush
// (synchronous_commit off). The caller closes it after the service stopped.
//
// What River commits on it alone is bookkeeping that may be lost with a crash of
// Postgres and come back right: a fetch (jobs marked running), completions, snoozes and
// retries of side-effect jobs, its leader's term, maintenance, and the tick jobs of
// Wake and the sweep. A tick commits on gastown's pool, synchronously, after the fetch
// that gave it its job; its flush makes every earlier commit durable, the fetch's
// included. A fetch lost with the server leaves its jobs available to fetch again; a lost
// completion leaves a job running until River rescues it and runs it again, which a
// side-effect job already allows for (River runs a job at least once; its outcome reaches
// its town once, by its idempotency key); a lost wake-up is the sweep's to find. Events
// and ticks never go through this pool: appends and ticks, and the jobs they insert, use
// gastown's pool and wait for their flush. A fetch that waits for its flush added one
// flush to every event's way to its tick: at half the fleet's capacity the queued part
// of the event-to-applied latency fell by ~0.5 ms without it (BENCHMARKS.md, fourteenth
// round).
func NewRiverPool(ctx context.Context, base *pgxpool.Pool) (*pgxpool.Pool, error) {
	cfg := base.Config() // a copy
	cfg.MaxConns = min(cfg.MaxConns, riverPoolMaxConns)
	cfg.MinConns = 0
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open River's pool: %w", err)
	}
	return pool, nil
}
