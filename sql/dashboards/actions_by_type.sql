-- Actions per tick by type (reference panel 2, stacked bars).
-- $1 town (NULL = fleet), $2 from, $3 to, $4 bucket.
-- Columns: time, action_type, actions.
SELECT date_bin($4::interval, t.started_at, $2::timestamptz) AS time,
       a.key AS action_type,
       sum(a.value::int)::int AS actions
FROM reconciler_ticks t, jsonb_each_text(gastown_actions_by_type(t.actions_by_type)) a
WHERE ($1::uuid IS NULL OR t.town_id = $1) AND t.started_at >= $2 AND t.started_at < $3
GROUP BY 1, 2
ORDER BY 1, 2;
