-- name: RigInsert :exec
-- RigInsert adds a rig to a town; an existing id is left as it is (idempotent apply).
INSERT INTO rigs (town_id, rig_id, name, git_url, default_branch, config, created_at)
VALUES (@town_id, @rig_id, @name, @git_url, @default_branch, @config, @now)
ON CONFLICT (town_id, rig_id) DO NOTHING;

-- name: RigGet :one
-- RigGet reads one rig of a town.
SELECT * FROM rigs WHERE town_id = @town_id AND rig_id = @rig_id;

-- name: RigListByTown :many
-- RigListByTown lists a town's rigs.
SELECT * FROM rigs WHERE town_id = @town_id ORDER BY created_at, rig_id;

-- name: RigUpdate :exec
-- RigUpdate replaces a rig's settings.
UPDATE rigs SET name = @name, git_url = @git_url, default_branch = @default_branch, config = @config
WHERE town_id = @town_id AND rig_id = @rig_id;

-- name: RigDelete :execrows
-- RigDelete deletes a rig.
DELETE FROM rigs WHERE town_id = @town_id AND rig_id = @rig_id;
