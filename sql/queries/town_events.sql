-- name: EventInsert :one
-- EventInsert appends a fact to a town's inbox. A repeated idempotency key inserts nothing
-- and returns no row.
INSERT INTO town_events (town_id, event_id, event_type, agent_id, bead_id, payload, idempotency_key, created_at)
VALUES (@town_id, @event_id, @event_type, @agent_id, @bead_id, @payload, @idempotency_key, now())
ON CONFLICT (town_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING seq, event_id;

-- name: EventInsertMany :many
-- EventInsertMany appends several facts to a town's inbox in one statement, in the order
-- given (their seqs ascend in that order). An event whose idempotency key was used already
-- (before, or by an earlier event of the same call) inserts nothing and returns no row.
-- Empty strings in agent_ids, bead_ids and idempotency_keys stand for NULL.
INSERT INTO town_events (town_id, event_id, event_type, agent_id, bead_id, payload, idempotency_key, created_at)
SELECT @town_id::uuid, e.event_id, e.event_type, NULLIF(e.agent_id, '')::uuid, NULLIF(e.bead_id, '')::uuid, e.payload,
       NULLIF(e.idempotency_key, ''), now()
FROM (SELECT unnest(@event_ids::uuid[]) AS event_id, unnest(@event_types::text[]) AS event_type,
             unnest(@agent_ids::text[]) AS agent_id, unnest(@bead_ids::text[]) AS bead_id,
             unnest(@payloads::jsonb[]) AS payload, unnest(@idempotency_keys::text[]) AS idempotency_key) AS e
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
-- EventHasPendingAfter reports whether a town has a pending event that a tick which
-- drained up to @seq did not try: one that arrived while the tick ran and may have lost
-- its wake-up. That is any event after @seq, and any never tried at all: a sequence
-- number is drawn at the insert, not at the commit, so an append that committed after a
-- later one can hold a number below @seq. Events the tick tried and failed (attempts > 0)
-- wait for the next tick, as before.
SELECT EXISTS (
    SELECT 1 FROM town_events
    WHERE town_id = @town_id AND state = 'pending' AND (seq > @seq OR attempts = 0)
);

-- name: EventDeleteBySubject :exec
-- EventDeleteBySubject deletes every event about a bead or agent (deleteBead cascade).
DELETE FROM town_events WHERE town_id = @town_id AND (bead_id = @subject_id OR agent_id = @subject_id);

-- name: EventPruneProcessed :execrows
-- EventPruneProcessed deletes at most @max_rows processed or dead events created before
-- @before (bounded batches keep locks short).
-- The old rows are found on town_events_created (a range that is empty in a busy town
-- with nothing old) and collected into an array first: as `seq IN (subquery)` the
-- planner, with stale statistics on a table that grew fast, joined every row of the town
-- to every other (14.8 s in one tick of the hot benchmark town, 10 ms on average).
DELETE FROM town_events e
WHERE e.town_id = @town_id AND e.seq = ANY (ARRAY(
    SELECT p.seq FROM town_events p
    WHERE p.town_id = @town_id AND p.created_at < @before AND p.state <> 'pending'
    LIMIT @max_rows
));

-- name: EventPendingContainerStatusExists :one
-- EventPendingContainerStatusExists reports whether a pending container_status event with
-- the same status already waits for the agent (at most one per agent and status).
SELECT EXISTS (
    SELECT 1 FROM town_events
    WHERE town_id = @town_id AND agent_id = @agent_id AND event_type = 'container_status'
      AND state = 'pending' AND payload ->> 'status' = @status::text
);

-- name: EventCountsForSnapshot :one
-- EventCountsForSnapshot counts, in one statement, a town's pending events and its
-- agent_dispatch_failed events created since @since that ticks up to tick @tick_id
-- applied: what the tick knows, and what a replay of it sees again (failures that arrived
-- later are not counted). The type is spelled out so that the partial index
-- town_events_dispatch_failed serves the second count.
SELECT (SELECT count(*) FROM town_events p WHERE p.town_id = @town_id AND p.state = 'pending')::int AS pending,
       (SELECT count(*) FROM town_events f
        WHERE f.town_id = @town_id AND f.event_type = 'agent_dispatch_failed' AND f.created_at >= @since
          AND f.state <> 'pending' AND f.processed_tick_id <= @tick_id::bigint)::int AS dispatch_failures;

-- name: EventListWindow :many
-- EventListWindow lists a town's events created in [@from, @to], whatever their state, in
-- drain order (the reference-style replay).
SELECT * FROM town_events
WHERE town_id = @town_id AND created_at >= @from_at AND created_at <= @to_at
ORDER BY seq
LIMIT @max_rows;

-- name: EventMarkProcessedMany :exec
-- EventMarkProcessedMany records that a tick applied a batch of pending events (one
-- statement for the whole drain). The seqs' range and the pending state are spelled out
-- so that whatever the statistics say the scan is the town_events_pending entries between
-- the batch's first and last seq: on `seq = ANY` alone, a town of many events in a table
-- without fresh statistics was planned as a scan of all the town's events (48 ms for 500
-- events of a town with 200,000, against 6 ms).
UPDATE town_events
SET state = 'processed', processed_at = @now, processed_tick_id = @tick_id, attempts = attempts + 1
WHERE town_id = @town_id AND state = 'pending'
  AND seq >= (SELECT min(s) FROM unnest(@seqs::bigint[]) s)
  AND seq <= (SELECT max(s) FROM unnest(@seqs::bigint[]) s)
  AND seq = ANY(@seqs::bigint[]);

-- name: HousekeepingDue :one
-- HousekeepingDue tells a tick which housekeeping steps have anything to do, in one
-- statement: undelivered mail to a working agent, an expired nudge, an unacknowledged
-- escalation below the re-escalation cap, an open triage request, an old event to prune.
-- Each step then runs its own queries only when its flag is set.
SELECT
    EXISTS (SELECT 1 FROM beads b JOIN agents a ON a.town_id = b.town_id AND a.agent_id::text = b.assignee_agent_bead_id
            WHERE b.town_id = @town_id AND b.type = 'message' AND b.status = 'open' AND a.status = 'working'
              AND (NOT (b.metadata ? 'delivery_requested_at')
                   OR gastown_try_timestamptz(b.metadata ->> 'delivery_requested_at') < @mail_reoffer_before::timestamptz)) AS mail,
    EXISTS (SELECT 1 FROM agent_nudges n WHERE n.town_id = @town_id AND n.delivered_at IS NULL
              AND n.expires_at IS NOT NULL AND n.expires_at <= @now) AS nudges,
    EXISTS (SELECT 1 FROM escalation_metadata e JOIN beads eb ON eb.town_id = e.town_id AND eb.bead_id = e.bead_id
            WHERE e.town_id = @town_id AND NOT e.acknowledged AND e.re_escalation_count < @max_count
              AND eb.status NOT IN ('closed', 'failed')) AS escalations,
    EXISTS (SELECT 1 FROM beads r WHERE r.town_id = @town_id AND r.type = 'issue' AND r.status = 'open'
              AND r.labels ? 'gt:triage-request') AS triage,
    EXISTS (SELECT 1 FROM town_events p WHERE p.town_id = @town_id AND p.created_at < @prune_before
              AND p.state <> 'pending') AS prune;

-- name: EventKeyExists :one
-- EventKeyExists reports whether an event with the idempotency key was appended to the
-- town (a side-effect job's outcome, keyed by the job).
SELECT EXISTS (
    SELECT 1 FROM town_events WHERE town_id = @town_id AND idempotency_key = @idempotency_key::text
);
