-- name: BeadEventInsert :exec
-- BeadEventInsert appends to a bead's activity feed.
INSERT INTO bead_events (town_id, bead_id, agent_id, event_type, old_value, new_value, metadata, created_at)
VALUES (@town_id, @bead_id, @agent_id, @event_type, @old_value, @new_value, @metadata, @now);

-- name: BeadEventListRecent :many
-- BeadEventListRecent lists a town's most recent bead events.
SELECT * FROM bead_events WHERE town_id = @town_id ORDER BY created_at DESC, bead_event_id DESC LIMIT @max_rows;

-- name: BeadEventInsertMany :exec
-- BeadEventInsertMany appends several rows to a town's activity feed, in the arrays'
-- order, with one clock (a tick's rows: see writeBehind). An empty agent id, old or new
-- value is NULL, as BeadEventInsert stores it.
INSERT INTO bead_events (town_id, bead_id, agent_id, event_type, old_value, new_value, metadata, created_at)
SELECT @town_id::uuid, e.bead_id, nullif(e.agent_id, '')::uuid, e.event_type, nullif(e.old_value, ''),
       nullif(e.new_value, ''), e.metadata, @now::timestamptz
FROM (SELECT unnest(@bead_ids::uuid[]) AS bead_id, unnest(@agent_ids::text[]) AS agent_id,
             unnest(@event_types::text[]) AS event_type, unnest(@old_values::text[]) AS old_value,
             unnest(@new_values::text[]) AS new_value, unnest(@metadata::jsonb[]) AS metadata) AS e;
