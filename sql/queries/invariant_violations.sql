-- name: ViolationListOpen :many
-- ViolationListOpen lists a town's open violation episodes.
SELECT * FROM invariant_violations WHERE town_id = @town_id AND resolved_at IS NULL;

-- name: ViolationOpen :exec
-- ViolationOpen starts a violation episode.
INSERT INTO invariant_violations (town_id, invariant, subject_id, message, first_seen_at, last_seen_at)
VALUES (@town_id, @invariant, @subject_id, @message, @now, @now);

-- name: ViolationSeen :exec
-- ViolationSeen keeps an open episode current.
UPDATE invariant_violations SET last_seen_at = @now, ticks_seen = ticks_seen + 1, message = @message
WHERE town_id = @town_id AND violation_id = @violation_id;

-- name: ViolationResolve :exec
-- ViolationResolve ends an episode that no longer holds.
UPDATE invariant_violations SET resolved_at = @now WHERE town_id = @town_id AND violation_id = @violation_id;
