-- name: ConvoyListByTown :many
-- ConvoyListByTown lists the convoy metadata of a town.
SELECT * FROM convoy_metadata WHERE town_id = @town_id ORDER BY bead_id;

-- name: ConvoyGet :one
-- ConvoyGet reads the metadata of one convoy.
SELECT * FROM convoy_metadata WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ConvoyInsert :exec
-- ConvoyInsert adds the metadata of a convoy bead.
INSERT INTO convoy_metadata (town_id, bead_id, total_beads, feature_branch, merge_mode, staged)
VALUES (@town_id, @bead_id, @total_beads, @feature_branch, @merge_mode, @staged);

-- name: ConvoySetClosedBeads :exec
-- ConvoySetClosedBeads records a convoy's progress.
UPDATE convoy_metadata SET closed_beads = @closed_beads WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ConvoySetStaged :exec
-- ConvoySetStaged stages or starts a convoy.
UPDATE convoy_metadata SET staged = @staged WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ConvoySetLanded :exec
-- ConvoySetLanded records when a convoy landed.
UPDATE convoy_metadata SET landed_at = @landed_at WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ConvoyProgress :one
-- ConvoyProgress counts a convoy's tracked beads, and those that are terminal with no open
-- or in_progress MR tracking them.
SELECT count(*)::int AS total,
       count(*) FILTER (WHERE t.status IN ('closed', 'failed') AND NOT EXISTS (
           SELECT 1 FROM bead_dependencies md
           JOIN beads mr ON mr.town_id = md.town_id AND mr.bead_id = md.bead_id
           WHERE md.town_id = t.town_id AND md.depends_on_bead_id = t.bead_id AND md.dependency_type = 'tracks'
             AND mr.type = 'merge_request' AND mr.status IN ('open', 'in_progress')))::int AS done
FROM bead_dependencies d
JOIN beads t ON t.town_id = d.town_id AND t.bead_id = d.bead_id
WHERE d.town_id = @town_id AND d.depends_on_bead_id = @convoy_id AND d.dependency_type = 'tracks'
  AND t.type <> 'merge_request';
