-- Fleet view: agent starts that failed (what the circuit breaker counts).
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, failures, towns.
SELECT date_bin($4::interval, created_at, $2::timestamptz) AS time,
       count(*)::int AS failures,
       count(DISTINCT town_id)::int AS towns
FROM town_events
WHERE event_type = 'agent_dispatch_failed' AND ($1::uuid IS NULL OR town_id = $1)
  AND created_at >= $2 AND created_at < $3
GROUP BY 1
ORDER BY 1;
