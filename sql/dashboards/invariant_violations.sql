-- Invariant violations (reference panel 4: a stat, red when > 0): the most violations one
-- tick saw in each bucket, and the violation episodes open now.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, violations, open_now.
SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time,
       max(invariant_violations)::int AS violations,
       (SELECT count(*)::int FROM invariant_violations v
        WHERE v.resolved_at IS NULL AND ($1::uuid IS NULL OR v.town_id = $1)) AS open_now
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
GROUP BY 1
ORDER BY 1;
