-- name: ReviewInsert :exec
-- ReviewInsert adds the review metadata of an MR bead.
INSERT INTO review_metadata (town_id, bead_id, branch, target_branch, pr_url)
VALUES (@town_id, @bead_id, @branch, @target_branch, @pr_url);

-- name: ReviewGet :one
-- ReviewGet reads the review metadata of an MR bead.
SELECT * FROM review_metadata WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ReviewListByTown :many
-- ReviewListByTown lists the review metadata of a town.
SELECT * FROM review_metadata WHERE town_id = @town_id;

-- name: ReviewSetPRURL :exec
-- ReviewSetPRURL records the PR of an MR.
UPDATE review_metadata SET pr_url = @pr_url WHERE town_id = @town_id AND bead_id = @bead_id;
