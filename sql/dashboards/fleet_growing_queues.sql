-- Fleet view: towns whose pending queue grew over the range (first vs last tick), deepest
-- growth first.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket (unused).
-- Columns: town_id, pending_first, pending_last, growth.
SELECT town_id, pending_first, pending_last, (pending_last - pending_first)::int AS growth
FROM (
    SELECT town_id,
           (array_agg(pending_event_count ORDER BY started_at))[1]::int AS pending_first,
           (array_agg(pending_event_count ORDER BY started_at DESC))[1]::int AS pending_last
    FROM reconciler_ticks
    WHERE ($1::uuid IS NULL OR town_id = $1) AND started_at >= $2 AND started_at < $3
      AND $4::interval IS NOT NULL
    GROUP BY town_id
) q
WHERE pending_last > pending_first
ORDER BY growth DESC, town_id;
