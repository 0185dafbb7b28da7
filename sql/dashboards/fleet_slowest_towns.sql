-- Fleet view: the ten towns with the slowest ticks (p99) in the range.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket (unused).
-- Columns: town_id, ticks, p99_ms, max_ms.
SELECT town_id,
       count(*)::int AS ticks,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY wall_clock_us) / 1000)::float8 AS p99_ms,
       (max(wall_clock_us) / 1000.0)::float8 AS max_ms
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
  AND $4::interval IS NOT NULL
GROUP BY town_id
ORDER BY p99_ms DESC, town_id
LIMIT 10;
