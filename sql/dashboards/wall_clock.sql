-- Tick wall clock (reference panel 5, time series with a 500 ms threshold line).
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, p50_ms, p99_ms, max_ms, threshold_ms.
SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time,
       (percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_clock_us) / 1000)::float8 AS p50_ms,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY wall_clock_us) / 1000)::float8 AS p99_ms,
       (max(wall_clock_us) / 1000.0)::float8 AS max_ms,
       500::float8 AS threshold_ms
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
GROUP BY 1
ORDER BY 1;
