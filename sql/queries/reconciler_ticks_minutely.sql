-- name: RollupWatermark :one
-- RollupWatermark reads up to where the minute rollup has run (fleet-wide maintenance).
SELECT coalesce((SELECT until FROM rollup_watermarks WHERE name = 'ticks_minutely'), @default_until::timestamptz)::timestamptz;

-- name: RollupTicksMinutely :execrows
-- RollupTicksMinutely folds the ticks of the complete minutes in [@from_at, @to_at) into
-- reconciler_ticks_minutely (fleet-wide maintenance; idempotent: rows are replaced).
WITH ticks AS (
    SELECT t.*, date_trunc('minute', t.started_at) AS minute
    FROM reconciler_ticks t
    WHERE t.started_at >= @from_at AND t.started_at < @to_at
), by_type AS (
    SELECT town_id, minute, jsonb_object_agg(action_type, n) AS actions_by_type
    FROM (
        SELECT k.town_id, k.minute, a.action_type, sum(a.n_text::int) AS n
        FROM ticks k CROSS JOIN LATERAL jsonb_each_text(gastown_actions_by_type(k.actions_by_type)) AS a(action_type, n_text)
        GROUP BY k.town_id, k.minute, a.action_type
    ) x
    GROUP BY town_id, minute
)
INSERT INTO reconciler_ticks_minutely (town_id, minute, ticks, events_drained, events_dead, actions_emitted,
    actions_skipped, actions_by_type, side_effects_attempted, side_effects_succeeded, side_effects_failed,
    invariant_violations, wall_clock_us_sum, wall_clock_us_max, pending_max, pending_last)
SELECT k.town_id, k.minute, count(*)::int, sum(k.events_drained)::int, sum(k.events_dead)::int,
    sum(k.actions_emitted)::int, sum(k.actions_skipped)::int, coalesce(min(bt.actions_by_type::text), '{}')::jsonb,
    sum(k.side_effects_attempted)::int, sum(k.side_effects_succeeded)::int, sum(k.side_effects_failed)::int,
    max(k.invariant_violations)::int, sum(k.wall_clock_us)::bigint, max(k.wall_clock_us)::int,
    max(k.pending_event_count)::int, (array_agg(k.pending_event_count ORDER BY k.started_at DESC))[1]::int
FROM ticks k
LEFT JOIN by_type bt ON bt.town_id = k.town_id AND bt.minute = k.minute
GROUP BY k.town_id, k.minute
ON CONFLICT (minute, town_id) DO UPDATE SET
    ticks = excluded.ticks, events_drained = excluded.events_drained, events_dead = excluded.events_dead,
    actions_emitted = excluded.actions_emitted, actions_skipped = excluded.actions_skipped,
    actions_by_type = excluded.actions_by_type, side_effects_attempted = excluded.side_effects_attempted,
    side_effects_succeeded = excluded.side_effects_succeeded, side_effects_failed = excluded.side_effects_failed,
    invariant_violations = excluded.invariant_violations, wall_clock_us_sum = excluded.wall_clock_us_sum,
    wall_clock_us_max = excluded.wall_clock_us_max, pending_max = excluded.pending_max, pending_last = excluded.pending_last;

-- name: RollupSetWatermark :exec
-- RollupSetWatermark records up to where the minute rollup has run.
INSERT INTO rollup_watermarks (name, until) VALUES ('ticks_minutely', @until)
ON CONFLICT (name) DO UPDATE SET until = excluded.until;

-- name: RollupPrune :execrows
-- RollupPrune deletes at most @max_rows rollup rows older than @before (fleet-wide).
DELETE FROM reconciler_ticks_minutely r
WHERE (r.minute, r.town_id) IN (
    SELECT o.minute, o.town_id FROM reconciler_ticks_minutely o WHERE o.minute < @before ORDER BY o.minute LIMIT @max_rows
);

-- name: TickDropPartitionsBefore :one
-- TickDropPartitionsBefore drops the daily reconciler_ticks partitions that end at or before
-- @before; a partition whose lock is not granted at once is left for the next run.
SELECT gastown_drop_tick_partitions(@before::date)::int;
