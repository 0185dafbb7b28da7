-- name: HeartbeatUpsert :exec
-- HeartbeatUpsert records an agent's heartbeat; the next tick applies it.
INSERT INTO agent_heartbeats (town_id, agent_id, received_at, last_event_type, last_event_at,
    active_tools, container_instance_id)
VALUES (@town_id, @agent_id, now(), @last_event_type, @last_event_at, @active_tools, @container_instance_id)
ON CONFLICT (town_id, agent_id) DO UPDATE
SET received_at = excluded.received_at,
    last_event_type = coalesce(excluded.last_event_type, agent_heartbeats.last_event_type),
    last_event_at = coalesce(excluded.last_event_at, agent_heartbeats.last_event_at),
    active_tools = coalesce(excluded.active_tools, agent_heartbeats.active_tools),
    container_instance_id = coalesce(excluded.container_instance_id, agent_heartbeats.container_instance_id),
    seq = agent_heartbeats.seq + 1;

-- name: HeartbeatListUnapplied :many
-- HeartbeatListUnapplied lists the heartbeats a town's next tick has not taken yet.
SELECT * FROM agent_heartbeats WHERE town_id = @town_id AND seq > applied_seq ORDER BY agent_id;

-- name: HeartbeatMarkApplied :exec
-- HeartbeatMarkApplied records that a tick took a heartbeat up to @seq.
UPDATE agent_heartbeats SET applied_seq = @seq
WHERE town_id = @town_id AND agent_id = @agent_id AND applied_seq < @seq;

-- name: HeartbeatDelete :exec
-- HeartbeatDelete forgets a deleted agent's heartbeat.
DELETE FROM agent_heartbeats WHERE town_id = @town_id AND agent_id = @agent_id;
