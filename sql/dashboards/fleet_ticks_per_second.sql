-- Fleet view: ticks per second and towns ticked.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, ticks_per_second, towns.
SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time,
       (count(*) / extract(epoch FROM $4::interval))::float8 AS ticks_per_second,
       count(DISTINCT town_id)::int AS towns
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
GROUP BY 1
ORDER BY 1;
