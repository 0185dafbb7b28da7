-- Side effects attempted / succeeded / failed (reference panel 3). Attempted counts the
-- side-effect jobs ticks inserted; succeeded and failed count the outcomes reported back
-- (as events) and drained by ticks in the bucket.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, attempted, succeeded, failed.
SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time,
       sum(side_effects_attempted)::int AS attempted,
       sum(side_effects_succeeded)::int AS succeeded,
       sum(side_effects_failed)::int AS failed
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
GROUP BY 1
ORDER BY 1;
