-- name: EventInsert :one
-- EventInsert appends a fact to a town's inbox. A repeated idempotency key inserts nothing
-- and returns no row.
INSERT INTO town_events (town_id, event_id, event_type, agent_id, bead_id, payload, idempotency_key, created_at)
VALUES (@town_id, @event_id, @event_type, @agent_id, @bead_id, @payload, @idempotency_key, now())
ON CONFLICT (town_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq, event_id;

-- name: EventListPending :many
-- EventListPending lists a town's pending events in drain order, at most @max_rows.
SELECT * FROM town_events
WHERE town_id = @town_id AND state = 'pending'
ORDER BY seq
LIMIT @max_rows;

-- name: EventMarkProcessed :exec
-- EventMarkProcessed records that a tick applied an event.
UPDATE town_events
SET state = 'processed', processed_at = @now, processed_tick_id = @tick_id, attempts = attempts + 1
WHERE town_id = @town_id AND seq = @seq;

-- name: EventRecordFailure :exec
-- EventRecordFailure records a failed apply; at the attempt bound the event goes dead.
UPDATE town_events
SET attempts = attempts + 1, last_error = @last_error,
    state = CASE WHEN @dead::boolean THEN 'dead' ELSE state END,
    processed_at = CASE WHEN @dead::boolean THEN @now ELSE processed_at END,
    processed_tick_id = CASE WHEN @dead::boolean THEN @tick_id ELSE processed_tick_id END
WHERE town_id = @town_id AND seq = @seq;

-- name: EventCountPending :one
-- EventCountPending counts a town's pending events.
SELECT count(*)::int FROM town_events WHERE town_id = @town_id AND state = 'pending';

-- name: EventHasPending :one
-- EventHasPending reports whether a town has a pending event.
SELECT EXISTS (SELECT 1 FROM town_events WHERE town_id = @town_id AND state = 'pending');

-- name: EventList :many
-- EventList lists a town's events, newest first, optionally of one state.
SELECT * FROM town_events
WHERE town_id = @town_id AND (sqlc.narg(state)::text IS NULL OR state = sqlc.narg(state))
ORDER BY seq DESC
LIMIT @max_rows;

-- name: EventGet :one
-- EventGet reads one event by id.
SELECT * FROM town_events WHERE town_id = @town_id AND event_id = @event_id;

-- name: EventHasPendingAfter :one
-- EventHasPendingAfter reports whether a town has a pending event later than @seq: one
-- that arrived while a tick ran and may have lost its wake-up.
SELECT EXISTS (SELECT 1 FROM town_events WHERE town_id = @town_id AND state = 'pending' AND seq > @seq);

-- name: EventDeleteBySubject :exec
-- EventDeleteBySubject deletes every event about a bead or agent (deleteBead cascade).
DELETE FROM town_events WHERE town_id = @town_id AND (bead_id = @subject_id OR agent_id = @subject_id);

-- name: EventPruneProcessed :execrows
-- EventPruneProcessed deletes at most @max_rows processed or dead events created before
-- @before (bounded batches keep locks short).
DELETE FROM town_events e
WHERE e.town_id = @town_id AND e.seq IN (
    SELECT p.seq FROM town_events p
    WHERE p.town_id = @town_id AND p.state <> 'pending' AND p.created_at < @before
    ORDER BY p.seq
    LIMIT @max_rows
);

-- name: EventPendingContainerStatusExists :one
-- EventPendingContainerStatusExists reports whether a pending container_status event with
-- the same status already waits for the agent (at most one per agent and status).
SELECT EXISTS (
    SELECT 1 FROM town_events
    WHERE town_id = @town_id AND agent_id = @agent_id AND event_type = 'container_status'
      AND state = 'pending' AND payload ->> 'status' = @status::text
);

-- name: EventCountSince :one
-- EventCountSince counts a town's events of one type created since @since that ticks up
-- to tick @tick_id applied: what the tick knows, and what a replay of it sees again
-- (events that arrived later are not counted).
SELECT count(*)::int FROM town_events
WHERE town_id = @town_id AND event_type = @event_type AND created_at >= @since
  AND state <> 'pending' AND processed_tick_id <= @tick_id::bigint;

-- name: EventListWindow :many
-- EventListWindow lists a town's events created in [@from, @to], whatever their state, in
-- drain order (the reference-style replay).
SELECT * FROM town_events
WHERE town_id = @town_id AND created_at >= @from_at AND created_at <= @to_at
ORDER BY seq
LIMIT @max_rows;

-- name: EventMarkProcessedMany :exec
-- EventMarkProcessedMany records that a tick applied a batch of events (one statement for
-- the whole drain).
UPDATE town_events
SET state = 'processed', processed_at = @now, processed_tick_id = @tick_id, attempts = attempts + 1
WHERE town_id = @town_id AND seq = ANY(@seqs::bigint[]);
