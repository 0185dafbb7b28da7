-- Events drained per tick (reference panel 1, time series).
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, ticks, events_drained, events_per_tick.
SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time,
       count(*)::int AS ticks,
       sum(events_drained)::int AS events_drained,
       round(avg(events_drained), 2)::float8 AS events_per_tick
FROM reconciler_ticks
WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
GROUP BY 1
ORDER BY 1;
