-- name: ReviewInsert :exec
-- ReviewInsert adds the review metadata of an MR bead.
INSERT INTO review_metadata (town_id, bead_id, branch, target_branch, pr_url)
VALUES (@town_id, @bead_id, @branch, @target_branch, @pr_url);

-- name: ReviewGet :one
-- ReviewGet reads the review metadata of an MR bead.
SELECT * FROM review_metadata WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ReviewListByTown :many
-- ReviewListByTown lists the review metadata of a town.
SELECT * FROM review_metadata WHERE town_id = @town_id ORDER BY bead_id;

-- name: ReviewSetPRURL :exec
-- ReviewSetPRURL records the PR of an MR.
UPDATE review_metadata SET pr_url = @pr_url WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ReviewResetRetryCount :exec
-- ReviewResetRetryCount zeroes an MR's retry count.
UPDATE review_metadata SET retry_count = 0 WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ReviewSetAutoMergeReadySince :exec
-- ReviewSetAutoMergeReadySince starts (or with NULL clears) the all-green grace period.
UPDATE review_metadata SET auto_merge_ready_since = @ready_since WHERE town_id = @town_id AND bead_id = @bead_id;

-- name: ReviewSetLastFeedbackCheck :exec
-- ReviewSetLastFeedbackCheck records when PR feedback was last looked at.
UPDATE review_metadata SET last_feedback_check_at = @checked_at WHERE town_id = @town_id AND bead_id = @bead_id;
