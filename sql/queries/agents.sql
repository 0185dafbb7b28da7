-- name: AgentInsert :exec
-- AgentInsert adds the agents row of an agent bead.
INSERT INTO agents (town_id, agent_id, role, name, rig_id, identity, status, created_at)
VALUES (@town_id, @agent_id, @role, @name, @rig_id, @identity, 'idle', @now);

-- name: AgentGet :one
-- AgentGet reads one agent of a town.
SELECT * FROM agents WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentListByTown :many
-- AgentListByTown lists a town's agents.
SELECT * FROM agents WHERE town_id = @town_id ORDER BY created_at, agent_id;

-- name: AgentFindIdlePolecat :one
-- AgentFindIdlePolecat finds an idle, unhooked polecat of a rig to reuse.
SELECT * FROM agents
WHERE town_id = @town_id AND role = 'polecat' AND rig_id = @rig_id
  AND status = 'idle' AND current_hook_bead_id IS NULL
ORDER BY created_at, agent_id
LIMIT 1;

-- name: AgentFindRefinery :one
-- AgentFindRefinery finds the refinery of a rig, whatever its status.
SELECT * FROM agents WHERE town_id = @town_id AND role = 'refinery' AND rig_id = @rig_id;

-- name: AgentListPolecatNames :many
-- AgentListPolecatNames lists the names polecats of a town use (names are town-wide).
SELECT name FROM agents WHERE town_id = @town_id AND role = 'polecat';

-- name: AgentSetStatus :exec
-- AgentSetStatus sets an agent's status; stalled_at is kept or set when entering stalled
-- and cleared otherwise.
UPDATE agents
SET status = @status,
    stalled_at = CASE WHEN @status::text = 'stalled' THEN coalesce(stalled_at, @now) ELSE NULL END
WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentHook :exec
-- AgentHook hooks an agent to a bead: it goes idle with fresh activity and no status line.
UPDATE agents
SET current_hook_bead_id = @bead_id, status = 'idle', stalled_at = NULL, last_activity_at = @now,
    agent_status_message = NULL, agent_status_updated_at = NULL
WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentUnhook :exec
-- AgentUnhook clears an agent's hook and checkpoint and sets it idle.
UPDATE agents
SET current_hook_bead_id = NULL, status = 'idle', stalled_at = NULL, checkpoint = NULL
WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentListHookedTo :many
-- AgentListHookedTo lists the agents hooked to a bead.
SELECT * FROM agents WHERE town_id = @town_id AND current_hook_bead_id = @bead_id ORDER BY agent_id;

-- name: AgentRecordDispatch :exec
-- AgentRecordDispatch marks an agent working for a dispatch attempt: attempts + 1, fresh
-- activity, SDK watermark cleared (SPEC.md §5.5).
UPDATE agents
SET status = 'working', stalled_at = NULL, dispatch_attempts = dispatch_attempts + 1,
    last_activity_at = @now, last_event_type = NULL, last_event_at = NULL
WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentResetDispatchAttempts :exec
-- AgentResetDispatchAttempts zeroes an agent's attempt counter.
UPDATE agents SET dispatch_attempts = 0 WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentApplyHeartbeat :exec
-- AgentApplyHeartbeat is touchAgent: fresh activity, idle → working (proof of life,
-- #1358) for a hooked agent, attempts reset, SDK watermark and active tools updated when
-- given. (The reference also turned an unhooked idle agent working, breaking invariant #7
-- until A1 undid it.)
UPDATE agents
SET last_activity_at = @received_at,
    status = CASE WHEN status = 'idle' AND current_hook_bead_id IS NOT NULL THEN 'working' ELSE status END,
    dispatch_attempts = 0,
    last_event_type = coalesce(sqlc.narg(last_event_type), last_event_type),
    last_event_at = coalesce(sqlc.narg(last_event_at), last_event_at),
    active_tools = coalesce(sqlc.narg(active_tools), active_tools)
WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentFindMayor :one
-- AgentFindMayor finds the town's mayor.
SELECT * FROM agents WHERE town_id = @town_id AND role = 'mayor';

-- name: AgentClearCheckpoint :exec
-- AgentClearCheckpoint clears an agent's resume data.
UPDATE agents SET checkpoint = NULL WHERE town_id = @town_id AND agent_id = @agent_id;

-- name: AgentListObservable :many
-- AgentListObservable lists, across the fleet, the agents whose container status is
-- observed: working or stalled (SPEC.md §1.3 step 3).
SELECT town_id, agent_id FROM agents WHERE status IN ('working', 'stalled')
ORDER BY town_id, agent_id
LIMIT @max_rows;
