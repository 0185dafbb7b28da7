-- name: NudgeInsert :exec
-- NudgeInsert queues a nudge for an agent.
INSERT INTO agent_nudges (town_id, nudge_id, agent_id, message, mode, priority, source, created_at, expires_at)
VALUES (@town_id, @nudge_id, @agent_id, @message, @mode, @priority, @source, @now, @expires_at);

-- name: NudgeMarkDelivered :exec
-- NudgeMarkDelivered records that a nudge reached its agent.
UPDATE agent_nudges SET delivered_at = @now
WHERE town_id = @town_id AND nudge_id = @nudge_id AND delivered_at IS NULL;

-- name: NudgeDeleteExpired :execrows
-- NudgeDeleteExpired drops undelivered nudges whose expiry passed.
DELETE FROM agent_nudges
WHERE town_id = @town_id AND delivered_at IS NULL AND expires_at IS NOT NULL AND expires_at <= @now;

-- name: NudgeListPending :many
-- NudgeListPending lists an agent's pending nudges: undelivered, unexpired, urgent first
-- then oldest first.
SELECT * FROM agent_nudges
WHERE town_id = @town_id AND agent_id = @agent_id AND delivered_at IS NULL
  AND (expires_at IS NULL OR expires_at > @now)
ORDER BY (priority = 'urgent') DESC, created_at, nudge_id;

-- name: NudgeListRecentBySource :many
-- NudgeListRecentBySource lists, per agent and source, the newest reconciler nudge since
-- @since (the GUPP dedupe window).
SELECT agent_id, source, max(created_at)::timestamptz AS last_at FROM agent_nudges
WHERE town_id = @town_id AND source LIKE 'reconciler:%' AND created_at >= @since
GROUP BY agent_id, source
ORDER BY agent_id, source;
