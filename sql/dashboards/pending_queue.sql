-- Pending event queue depth after each tick (reference panel 6, a gauge; alarm > 50).
-- $1 town (NULL = fleet: summed over towns of each town's deepest queue), $2 from, $3 to,
-- $4 bucket.
-- Columns: time, pending.
SELECT time, sum(pending)::int AS pending
FROM (
    SELECT date_bin($4::interval, started_at, $2::timestamptz) AS time, town_id, max(pending_event_count) AS pending
    FROM reconciler_ticks
    WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
    GROUP BY 1, 2
) per_town
GROUP BY time
ORDER BY time;
