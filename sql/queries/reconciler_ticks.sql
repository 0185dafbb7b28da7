-- name: TickNextID :one
-- TickNextID allocates the id of a tick before its events are marked with it.
SELECT nextval('reconciler_ticks_tick_id_seq')::bigint;

-- name: TickInsert :exec
-- TickInsert writes the metrics row of one tick.
INSERT INTO reconciler_ticks (tick_id, started_at, town_id, wall_clock_us, drain_us, snapshot_us,
    reconcile_us, apply_us, events_drained, actions_emitted, pending_event_count, next_tick_ms,
    events_failed, events_dead, heartbeats_applied, actions_skipped, side_effects_attempted,
    side_effects_succeeded, side_effects_failed, invariant_violations, actions_by_type)
VALUES (@tick_id, @started_at, @town_id, @wall_clock_us, @drain_us, @snapshot_us,
    @reconcile_us, @apply_us, @events_drained, @actions_emitted, @pending_event_count, @next_tick_ms,
    @events_failed, @events_dead, @heartbeats_applied, @actions_skipped, @side_effects_attempted,
    @side_effects_succeeded, @side_effects_failed, @invariant_violations, @actions_by_type);

-- name: TickListByTown :many
-- TickListByTown lists a town's most recent ticks.
SELECT * FROM reconciler_ticks WHERE town_id = @town_id ORDER BY tick_id DESC LIMIT @max_rows;

-- name: TickInputInsert :exec
-- TickInputInsert records the non-event inputs of a tick.
INSERT INTO tick_inputs (town_id, tick_id, clock_at, heartbeats) VALUES (@town_id, @tick_id, @clock_at, @heartbeats);

-- name: TickEnsurePartitions :one
-- TickEnsurePartitions creates the daily partitions of reconciler_ticks ahead of time.
SELECT gastown_ensure_tick_partitions(@days_ahead::int)::int;
