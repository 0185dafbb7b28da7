-- name: ConvoyListByTown :many
-- ConvoyListByTown lists the convoy metadata of a town.
SELECT * FROM convoy_metadata WHERE town_id = @town_id;

-- name: ConvoyGet :one
-- ConvoyGet reads the metadata of one convoy.
SELECT * FROM convoy_metadata WHERE town_id = @town_id AND bead_id = @bead_id;
