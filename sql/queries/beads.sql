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
-- BeadListForSnapshot lists every bead of a town except agent beads, in the snapshot's
-- order. Ticks read it through db/fastscan.go (snapshotBeadsSQL), without the ORDER BY
-- (the worker sorts the rows: sortSnapshot) and with labels and metadata from their stored
-- text twins (migration 00014); this query is what its tests compare with.
SELECT * FROM beads WHERE town_id = @town_id AND type <> 'agent' ORDER BY created_at, bead_id;

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

-- name: BeadRemoveMetadataKeys :exec
-- BeadRemoveMetadataKeys removes keys from a bead's metadata.
UPDATE beads SET metadata = metadata - @keys::text[], updated_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadTouch :exec
-- BeadTouch moves a bead's updated_at (staleness timers restart).
UPDATE beads SET updated_at = @now WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadResetDispatch :exec
-- BeadResetDispatch zeroes a bead's dispatch attempts and forgets the last attempt.
UPDATE beads SET dispatch_attempts = 0, last_dispatch_attempt_at = NULL, updated_at = @now
WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadDelete :execrows
-- BeadDelete deletes one bead (edges, satellites and its feed cascade).
DELETE FROM beads WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: BeadListChildren :many
-- BeadListChildren lists the beads whose parent is the bead.
SELECT bead_id FROM beads WHERE town_id = @town_id AND parent_bead_id = @bead_id;

-- name: BeadListAssignedTo :many
-- BeadListAssignedTo lists the beads assigned to an agent.
SELECT * FROM beads WHERE town_id = @town_id AND assignee_agent_bead_id = @assignee;

-- name: BeadClearAssigneeOfTerminal :exec
-- BeadClearAssigneeOfTerminal clears an agent from the terminal beads assigned to it.
UPDATE beads SET assignee_agent_bead_id = NULL, updated_at = @now
WHERE town_id = @town_id AND assignee_agent_bead_id = @assignee AND status IN ('closed', 'failed');

-- name: BeadReopenAssignedTo :exec
-- BeadReopenAssignedTo gives an agent's live beads back: open and unassigned.
UPDATE beads SET status = 'open', assignee_agent_bead_id = NULL, updated_at = @now
WHERE town_id = @town_id AND assignee_agent_bead_id = @assignee AND status NOT IN ('closed', 'failed');

-- name: BeadListTrackers :many
-- BeadListTrackers lists the beads that track a bead (its MRs, a convoy's tasks...).
SELECT b.* FROM beads b
JOIN bead_dependencies d ON d.town_id = b.town_id AND d.bead_id = b.bead_id
WHERE d.town_id = @town_id AND d.depends_on_bead_id = @bead_id AND d.dependency_type = 'tracks'
ORDER BY b.created_at, b.bead_id;

-- name: BeadListTracked :many
-- BeadListTracked lists the beads a bead tracks (an MR's source, an issue's convoy).
SELECT b.* FROM beads b
JOIN bead_dependencies d ON d.town_id = b.town_id AND d.depends_on_bead_id = b.bead_id
WHERE d.town_id = @town_id AND d.bead_id = @bead_id AND d.dependency_type = 'tracks'
ORDER BY b.created_at, b.bead_id;

-- name: BeadLiveBlockerWithLabel :one
-- BeadLiveBlockerWithLabel finds a non-terminal bead with the label that blocks the bead.
SELECT b.* FROM beads b
JOIN bead_dependencies d ON d.town_id = b.town_id AND d.depends_on_bead_id = b.bead_id
WHERE d.town_id = @town_id AND d.bead_id = @bead_id AND d.dependency_type = 'blocks'
  AND b.status NOT IN ('closed', 'failed') AND b.labels ? @label::text
ORDER BY b.created_at
LIMIT 1;

-- name: BeadLatestLiveMRAssignedTo :one
-- BeadLatestLiveMRAssignedTo finds the most recently updated non-terminal MR assigned to an
-- agent (the review an unhooked refinery was doing).
SELECT * FROM beads
WHERE town_id = @town_id AND type = 'merge_request' AND assignee_agent_bead_id = @assignee
  AND status NOT IN ('closed', 'failed')
ORDER BY updated_at DESC, bead_id
LIMIT 1;

-- name: BeadOpenTriageRequestExists :one
-- BeadOpenTriageRequestExists reports whether an open triage request of a type exists for
-- an agent (dedupe); a request about no agent (a merge conflict's escalation) dedupes on
-- the bead it is about, so that each MR in conflict gets its own.
SELECT EXISTS (
    SELECT 1 FROM beads
    WHERE town_id = @town_id AND type = 'issue' AND status = 'open' AND labels ? 'gt:triage-request'
      AND metadata ->> 'triage_type' = @triage_type::text
      AND assignee_agent_bead_id IS NOT DISTINCT FROM sqlc.narg(agent_id)::text
      AND (sqlc.narg(agent_id)::text IS NOT NULL
           OR metadata ->> 'hooked_bead_id' IS NOT DISTINCT FROM sqlc.narg(hooked_bead_id)::text)
);

-- name: BeadCountOpenAutoTriageRequests :one
-- BeadCountOpenAutoTriageRequests counts open triage requests other than escalations (the
-- cap of automatic requests).
SELECT count(*)::int FROM beads
WHERE town_id = @town_id AND type = 'issue' AND status = 'open' AND labels ? 'gt:triage-request'
  AND coalesce(metadata ->> 'triage_type', '') <> 'escalation';

-- name: BeadListOpenTriageRequests :many
-- BeadListOpenTriageRequests lists the open triage requests, oldest first.
SELECT * FROM beads
WHERE town_id = @town_id AND type = 'issue' AND status = 'open' AND labels ? 'gt:triage-request'
ORDER BY created_at, bead_id;

-- name: BeadLiveTriageBatchExists :one
-- BeadLiveTriageBatchExists reports whether a triage batch bead is open or in progress, or
-- failed since @failed_since (the dispatch cooldown).
SELECT EXISTS (
    SELECT 1 FROM beads
    WHERE town_id = @town_id AND type = 'issue' AND labels ? 'gt:triage' AND created_by = 'patrol'
      AND (status IN ('open', 'in_progress') OR (status = 'failed' AND updated_at >= @failed_since))
);

-- name: BeadListUndeliveredMail :many
-- BeadListUndeliveredMail lists open message beads addressed to working agents, oldest
-- first: those whose delivery was never asked for, and those asked for before
-- @reoffer_before whose outcome never came (the job's process died).
SELECT b.* FROM beads b
JOIN agents a ON a.town_id = b.town_id AND a.agent_id::text = b.assignee_agent_bead_id
WHERE b.town_id = @town_id AND b.type = 'message' AND b.status = 'open' AND a.status = 'working'
  AND (NOT (b.metadata ? 'delivery_requested_at')
       OR gastown_try_timestamptz(b.metadata ->> 'delivery_requested_at') < @reoffer_before::timestamptz)
ORDER BY b.created_at, b.bead_id
LIMIT @max_rows;

-- name: BeadListLive :many
-- BeadListLive lists a town's non-terminal beads other than agents, newest first.
SELECT * FROM beads
WHERE town_id = @town_id AND type <> 'agent' AND status NOT IN ('closed', 'failed')
ORDER BY updated_at DESC, bead_id
LIMIT @max_rows;

-- name: BeadListOpenMailFor :many
-- BeadListOpenMailFor lists the open message beads addressed to an agent, oldest first.
SELECT * FROM beads
WHERE town_id = @town_id AND type = 'message' AND status = 'open' AND assignee_agent_bead_id = @assignee
ORDER BY created_at, bead_id;
