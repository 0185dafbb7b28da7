-- name: DependencyInsert :exec
-- DependencyInsert adds an edge; an existing edge is kept.
INSERT INTO bead_dependencies (town_id, bead_id, depends_on_bead_id, dependency_type, created_at)
VALUES (@town_id, @bead_id, @depends_on_bead_id, @dependency_type, @now)
ON CONFLICT DO NOTHING;

-- name: DependencyListByTown :many
-- DependencyListByTown lists every edge of a town.
SELECT bead_id, depends_on_bead_id, dependency_type FROM bead_dependencies WHERE town_id = @town_id
ORDER BY bead_id, depends_on_bead_id;

-- name: DependencyListOfBead :many
-- DependencyListOfBead lists the edges that start or end at a bead.
SELECT bead_id, depends_on_bead_id, dependency_type FROM bead_dependencies
WHERE town_id = @town_id AND (bead_id = @bead_id OR depends_on_bead_id = @bead_id)
ORDER BY bead_id, depends_on_bead_id;
