-- name: BeadEventInsert :exec
-- BeadEventInsert appends to a bead's activity feed.
INSERT INTO bead_events (town_id, bead_id, agent_id, event_type, old_value, new_value, metadata, created_at)
VALUES (@town_id, @bead_id, @agent_id, @event_type, @old_value, @new_value, @metadata, @now);

-- name: BeadEventListRecent :many
-- BeadEventListRecent lists a town's most recent bead events.
SELECT * FROM bead_events WHERE town_id = @town_id ORDER BY created_at DESC, bead_event_id DESC LIMIT @max_rows;
