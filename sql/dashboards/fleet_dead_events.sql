-- Fleet view: dead (poison) events by town and type, with the last error.
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket (unused).
-- Columns: town_id, event_type, dead, last_error, last_at.
SELECT town_id, event_type,
       count(*)::int AS dead,
       (array_agg(last_error ORDER BY processed_at DESC))[1] AS last_error,
       max(processed_at) AS last_at
FROM town_events
WHERE state = 'dead' AND ($1::uuid IS NULL OR town_id = $1)
  AND processed_at >= $2 AND processed_at < $3 AND $4::interval IS NOT NULL
GROUP BY town_id, event_type
ORDER BY dead DESC, town_id, event_type;
