-- name: BeadInsert :exec
-- BeadInsert creates a bead.
INSERT INTO beads (town_id, bead_id, type, status, title, body, rig_id, parent_bead_id,
    assignee_agent_bead_id, priority, labels, metadata, created_by, created_at, updated_at)
VALUES (@town_id, @bead_id, @type, @status, @title, @body, @rig_id, @parent_bead_id,
    @assignee_agent_bead_id, @priority, @labels, @metadata, @created_by, @now, @now);

-- name: BeadGet :one
-- BeadGet reads one bead of a town.
SELECT * FROM beads WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadExists :one
-- BeadExists reports whether the town has the bead.
SELECT EXISTS (SELECT 1 FROM beads WHERE town_id = @town_id AND bead_id = @bead_id);

-- name: BeadListForSnapshot :many
-- BeadListForSnapshot lists every bead of a town except agent beads.
SELECT * FROM beads WHERE town_id = @town_id AND type <> 'agent';

-- name: BeadList :many
-- BeadList lists a town's beads with optional filters, newest first.
SELECT * FROM beads
WHERE town_id = @town_id
  AND (sqlc.narg(type)::text IS NULL OR type = sqlc.narg(type))
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(rig_id)::uuid IS NULL OR rig_id = sqlc.narg(rig_id))
ORDER BY created_at DESC, bead_id
LIMIT @max_rows;

-- name: BeadSetStatus :exec
-- BeadSetStatus moves a bead to a status; closed_at is set when it closes.
UPDATE beads
SET status = @status, updated_at = @now,
    closed_at = CASE WHEN @status::text = 'closed' THEN @now ELSE closed_at END
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadSetAssignee :exec
-- BeadSetAssignee sets or (with NULL) clears a bead's assignee.
UPDATE beads SET assignee_agent_bead_id = @assignee, updated_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadRecordDispatchAttempt :exec
-- BeadRecordDispatchAttempt counts a dispatch attempt of a bead.
UPDATE beads
SET dispatch_attempts = dispatch_attempts + 1, last_dispatch_attempt_at = @now, updated_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadCloseOtherMRs :exec
-- BeadCloseOtherMRs force-closes every other non-closed MR tracking the same source,
-- failed ones included (SPEC.md §2.14 completeReviewWithResult).
UPDATE beads b
SET status = 'closed', closed_at = @now, updated_at = @now
FROM bead_dependencies d
WHERE d.town_id = @town_id AND d.depends_on_bead_id = @source_bead_id AND d.dependency_type = 'tracks'
  AND b.town_id = d.town_id AND b.bead_id = d.bead_id
  AND b.type = 'merge_request' AND b.status <> 'closed' AND b.bead_id <> @exclude_bead_id;

-- name: BeadCountByStatus :many
-- BeadCountByStatus counts a town's work beads (not agents or messages) by status.
SELECT status, count(*)::int AS n FROM beads
WHERE town_id = @town_id AND type NOT IN ('agent', 'message')
GROUP BY status;

-- name: BeadMergeMetadata :exec
-- BeadMergeMetadata merges keys into a bead's metadata.
UPDATE beads SET metadata = metadata || @patch::jsonb, updated_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadOpenMessageExists :one
-- BeadOpenMessageExists reports whether an open message with this body waits for the
-- recipient (dedupe of repeated notices).
SELECT EXISTS (
    SELECT 1 FROM beads
    WHERE town_id = @town_id AND type = 'message' AND status = 'open'
      AND assignee_agent_bead_id = @assignee AND body = @body
);
