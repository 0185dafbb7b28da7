-- name: TownInsert :one
-- TownInsert creates a tenant. Its first tick is due at once.
INSERT INTO towns (town_id, name, config, created_at, updated_at, next_tick_at)
VALUES (@town_id, @name, @config, @now, @now, @now)
RETURNING *;

-- name: TownGet :one
-- TownGet reads one town.
SELECT * FROM towns WHERE town_id = @town_id;

-- name: TownList :many
-- TownList lists towns by creation time.
SELECT * FROM towns ORDER BY created_at, town_id LIMIT @max_rows;

-- name: TownLockForTick :one
-- TownLockForTick locks the town row for one tick and allocates the tick's id. FOR NO KEY
-- UPDATE leaves foreign-key checks (FOR KEY SHARE) of concurrent event inserts unblocked;
-- SKIP LOCKED returns no row when another tick holds the town, so the caller backs off
-- instead of waiting. The id is drawn once the lock is held (the subquery locks first; a
-- nextval beside FOR UPDATE would run in the scan, before the lock): the ticks of a
-- town take ids in the order they commit, which processed_tick_id <= @tick_id relies on.
SELECT sqlc.embed(towns), nextval('reconciler_ticks_tick_id_seq')::bigint AS tick_id
FROM (SELECT * FROM towns WHERE town_id = @town_id FOR NO KEY UPDATE SKIP LOCKED) AS towns;

-- name: TownLockForTickWait :one
-- TownLockForTickWait locks the town row, waiting up to the session's lock_timeout
-- (dry-run and replay), and then allocates the tick's id (after the tick it waited for
-- committed: see TownLockForTick).
SELECT sqlc.embed(towns), nextval('reconciler_ticks_tick_id_seq')::bigint AS tick_id
FROM (SELECT * FROM towns WHERE town_id = @town_id FOR NO KEY UPDATE) AS towns;

-- name: TownFinishTick :exec
-- TownFinishTick records a finished tick and when the town is due next. It touches only
-- unindexed columns, so the update is HOT.
UPDATE towns
SET last_tick_at = @now, next_tick_at = @next_tick_at, tick_count = tick_count + 1,
    records_since_checkpoint = CASE WHEN @checkpointed::bool THEN 0 ELSE records_since_checkpoint + @recorded::int END,
    checkpoint_tick_id = CASE WHEN @checkpointed::bool THEN @tick_id::bigint ELSE checkpoint_tick_id END,
    checkpoint_at = CASE WHEN @checkpointed::bool THEN @now ELSE checkpoint_at END
WHERE town_id = @town_id;

-- name: TownListDue :many
-- TownListDue lists towns whose next tick is due, or that have pending events older than
-- @pending_before (their wake-up was lost, e.g. a process died after committing events).
-- Towns on the idle cadence (the last tick scheduled the next more than @active_interval
-- later) are left to the quiet ticks (quiet_ticks.sql) unless they were due by @quiet_before.
SELECT t.town_id FROM towns t
WHERE t.next_tick_at <= @now
  AND (t.last_tick_at IS NULL OR t.next_tick_at - t.last_tick_at <= @active_interval::interval
       OR t.next_tick_at <= @quiet_before)
UNION
SELECT DISTINCT e.town_id FROM town_events e
WHERE e.state = 'pending' AND e.created_at <= @pending_before
LIMIT @max_rows;

-- name: TownDelete :execrows
-- TownDelete deletes a town and, by cascade, everything in it.
DELETE FROM towns WHERE town_id = @town_id;

-- name: TownSetDraining :exec
-- TownSetDraining starts a drain (container eviction) with a fresh nonce.
UPDATE towns SET draining = true, drain_nonce = @drain_nonce, drain_started_at = @now, updated_at = @now
WHERE town_id = @town_id;

-- name: TownClearDraining :exec
-- TownClearDraining ends a drain.
UPDATE towns SET draining = false, drain_nonce = NULL, drain_started_at = NULL, updated_at = @now
WHERE town_id = @town_id;

-- name: TownSetContainerInstance :exec
-- TownSetContainerInstance records the container instance agents last reported from.
UPDATE towns SET container_instance_id = @container_instance_id WHERE town_id = @town_id;

-- name: TownSetConfig :exec
-- TownSetConfig replaces a town's configuration.
UPDATE towns SET config = @config, updated_at = @now WHERE town_id = @town_id;

-- name: TownIsTicking :one
-- TownIsTicking reports whether a tick holds the town's row lock right now (a lock
-- attempt that skips a locked row finds nothing). Run it in a transaction of its own.
SELECT NOT EXISTS (SELECT 1 FROM towns WHERE town_id = @town_id FOR NO KEY UPDATE SKIP LOCKED)::boolean;
