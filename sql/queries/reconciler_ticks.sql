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
-- TickInputInsert records what a replay of a tick needs besides its applied events.
INSERT INTO tick_inputs (town_id, tick_id, clock_at, heartbeats, failed_seqs, actions, state_hash, state_parts)
VALUES (@town_id, @tick_id, @clock_at, @heartbeats, @failed_seqs, @actions, @state_hash, @state_parts);

-- name: TickInputList :many
-- TickInputList lists a town's tick records from tick @from_tick on, in tick order.
SELECT * FROM tick_inputs WHERE town_id = @town_id AND tick_id >= @from_tick ORDER BY tick_id LIMIT @max_rows;

-- name: CheckpointPrune :execrows
-- CheckpointPrune deletes a town's checkpoints from before tick @before_tick: once the
-- records up to that tick are gone, a replay can no longer start from them.
DELETE FROM town_checkpoints c WHERE c.town_id = @town_id AND c.tick_id < @before_tick::bigint;

-- name: TickInputPrune :one
-- TickInputPrune deletes at most @max_rows of a town's oldest tick records from before
-- @before and returns the newest tick it deleted (0: none).
WITH gone AS (
    DELETE FROM tick_inputs t WHERE t.town_id = @town_id AND t.tick_id IN (
        SELECT o.tick_id FROM tick_inputs o WHERE o.town_id = @town_id AND o.clock_at < @before ORDER BY o.tick_id LIMIT @max_rows)
    RETURNING t.tick_id
)
SELECT coalesce(max(tick_id), 0)::bigint FROM gone;

-- name: TickEnsurePartitions :one
-- TickEnsurePartitions creates the daily partitions of reconciler_ticks ahead of time.
SELECT gastown_ensure_tick_partitions(@days_ahead::int)::int;

-- name: TickFinishRecorded :exec
-- TickFinishRecorded is TickInsert, TickInputInsert and TownFinishTick (a recorded tick)
-- in one statement: a tick's last writes cost one statement's overhead, not three.
WITH metrics AS (
    INSERT INTO reconciler_ticks (tick_id, started_at, town_id, wall_clock_us, drain_us, snapshot_us,
        reconcile_us, apply_us, events_drained, actions_emitted, pending_event_count, next_tick_ms,
        events_failed, events_dead, heartbeats_applied, actions_skipped, side_effects_attempted,
        side_effects_succeeded, side_effects_failed, invariant_violations, actions_by_type)
    VALUES (@tick_id, @started_at, @town_id, @wall_clock_us, @drain_us, @snapshot_us,
        @reconcile_us, @apply_us, @events_drained, @actions_emitted, @pending_event_count, @next_tick_ms,
        @events_failed, @events_dead, @heartbeats_applied, @actions_skipped, @side_effects_attempted,
        @side_effects_succeeded, @side_effects_failed, @invariant_violations, @actions_by_type)
), record AS (
    INSERT INTO tick_inputs (town_id, tick_id, clock_at, heartbeats, failed_seqs, actions, state_hash, state_parts)
    VALUES (@town_id, @tick_id, @started_at, @heartbeats, @failed_seqs, @actions, @state_hash, @state_parts)
)
UPDATE towns
SET last_tick_at = @started_at::timestamptz, next_tick_at = @next_tick_at, tick_count = towns.tick_count + 1,
    records_since_checkpoint = CASE WHEN @checkpointed::bool THEN 0 ELSE towns.records_since_checkpoint + 1 END,
    checkpoint_tick_id = CASE WHEN @checkpointed::bool THEN @tick_id::bigint ELSE towns.checkpoint_tick_id END,
    checkpoint_at = CASE WHEN @checkpointed::bool THEN @started_at::timestamptz ELSE towns.checkpoint_at END
WHERE towns.town_id = @town_id;
