-- Quiet ticks: the idle cadence of many towns at once (jobs.Service.quietTicks). A town
-- whose last tick found no active work is due again after the idle interval (its next
-- tick lies more than the active interval after its last); when nothing
-- can have changed it since (no pending event, no heartbeat, no live bead, no open
-- violation, no nudge to expire, no old event to prune, not draining), its tick only
-- re-runs the rules on the same state. A batch of such towns is locked, loaded and
-- finished with a fixed number of statements, whatever its size; the rules still run on
-- each town's snapshot, and a town for which they find anything gets a full tick.

-- name: QuietTownsLock :many
-- QuietTownsLock locks up to @max_rows due quiet towns, oldest due first. Towns another
-- tick holds are skipped (SKIP LOCKED) — that tick schedules them; so are towns with
-- anything a full tick must take care of (QuietTownsBusy lists those), and the towns of @exclude (an earlier batch of the
-- same run left them to full ticks).
SELECT t.* FROM towns t
WHERE t.next_tick_at <= @now AND t.last_tick_at IS NOT NULL
  AND t.town_id <> ALL (@exclude::uuid[])
  AND t.next_tick_at - t.last_tick_at > @active_interval::interval
  AND NOT t.draining
  AND NOT EXISTS (SELECT 1 FROM town_events e WHERE e.town_id = t.town_id AND e.state = 'pending')
  AND NOT EXISTS (SELECT 1 FROM agent_heartbeats h WHERE h.town_id = t.town_id AND h.seq > h.applied_seq)
  AND NOT EXISTS (SELECT 1 FROM beads b WHERE b.town_id = t.town_id AND b.type <> 'agent' AND b.status NOT IN ('closed', 'failed'))
  AND NOT EXISTS (SELECT 1 FROM invariant_violations v WHERE v.town_id = t.town_id AND v.resolved_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM agent_nudges n WHERE n.town_id = t.town_id AND n.delivered_at IS NULL
                    AND n.expires_at IS NOT NULL AND n.expires_at <= @now)
  AND NOT EXISTS (SELECT 1 FROM town_events p WHERE p.town_id = t.town_id AND p.created_at < @prune_before
                    AND p.state <> 'pending')
ORDER BY t.next_tick_at
LIMIT @max_rows
FOR NO KEY UPDATE OF t SKIP LOCKED;

-- name: QuietTownsBusy :many
-- QuietTownsBusy lists up to @max_rows due towns on the idle cadence that a quiet tick may
-- not take: they have something a full tick must take care of. Its condition is the
-- negation of QuietTownsLock's, spelled out in both: as a SQL function it would not be
-- inlined (sub-selects), and both statements ran twice as slow
-- (jobs/TestPropertyQuietTicksAreFullTicksWithNothingToDo checks that every due town
-- the batch does not tick is handed back).
SELECT t.town_id FROM towns t
WHERE t.next_tick_at <= @now AND t.last_tick_at IS NOT NULL
  AND t.next_tick_at - t.last_tick_at > @active_interval::interval
  AND (t.draining
    OR EXISTS (SELECT 1 FROM town_events e WHERE e.town_id = t.town_id AND e.state = 'pending')
    OR EXISTS (SELECT 1 FROM agent_heartbeats h WHERE h.town_id = t.town_id AND h.seq > h.applied_seq)
    OR EXISTS (SELECT 1 FROM beads b WHERE b.town_id = t.town_id AND b.type <> 'agent' AND b.status NOT IN ('closed', 'failed'))
    OR EXISTS (SELECT 1 FROM invariant_violations v WHERE v.town_id = t.town_id AND v.resolved_at IS NULL)
    OR EXISTS (SELECT 1 FROM agent_nudges n WHERE n.town_id = t.town_id AND n.delivered_at IS NULL
                 AND n.expires_at IS NOT NULL AND n.expires_at <= @now)
    OR EXISTS (SELECT 1 FROM town_events p WHERE p.town_id = t.town_id AND p.created_at < @prune_before
                 AND p.state <> 'pending'))
ORDER BY t.next_tick_at
LIMIT @max_rows;

-- name: QuietTickIDs :many
-- QuietTickIDs allocates @n tick ids.
SELECT nextval('reconciler_ticks_tick_id_seq')::bigint FROM generate_series(1, @n::int);

-- name: QuietBeads :many
-- QuietBeads is BeadListForSnapshot for a set of towns, town by town.
SELECT * FROM beads WHERE town_id = ANY (@town_ids::uuid[]) AND type <> 'agent'
ORDER BY town_id, created_at, bead_id;

-- name: QuietAgents :many
-- QuietAgents is AgentListByTown for a set of towns.
SELECT * FROM agents WHERE town_id = ANY (@town_ids::uuid[]) ORDER BY town_id, created_at, agent_id;

-- name: QuietDependencies :many
-- QuietDependencies is DependencyListByTown for a set of towns.
SELECT town_id, bead_id, depends_on_bead_id, dependency_type FROM bead_dependencies
WHERE town_id = ANY (@town_ids::uuid[])
ORDER BY town_id, bead_id, depends_on_bead_id;

-- name: QuietReviews :many
-- QuietReviews is ReviewListByTown for a set of towns.
SELECT * FROM review_metadata WHERE town_id = ANY (@town_ids::uuid[]) ORDER BY town_id, bead_id;

-- name: QuietRigs :many
-- QuietRigs is RigListByTown for a set of towns.
SELECT * FROM rigs WHERE town_id = ANY (@town_ids::uuid[]) ORDER BY town_id, created_at, rig_id;

-- name: QuietConvoys :many
-- QuietConvoys is ConvoyListByTown for a set of towns.
SELECT * FROM convoy_metadata WHERE town_id = ANY (@town_ids::uuid[]) ORDER BY town_id, bead_id;

-- name: QuietNudges :many
-- QuietNudges is NudgeListRecentBySource for a set of towns since the earliest of their
-- dedupe windows (each town's own window is applied to last_at).
SELECT town_id, agent_id, source, max(created_at)::timestamptz AS last_at FROM agent_nudges
WHERE town_id = ANY (@town_ids::uuid[]) AND source LIKE 'reconciler:%' AND created_at >= @since
GROUP BY town_id, agent_id, source
ORDER BY town_id, agent_id, source;

-- name: QuietDispatchFailures :many
-- QuietDispatchFailures is EventCountsForSnapshot's failure count for a set of towns
-- (towns without a failure have no row).
SELECT town_id, count(*)::int AS failures FROM town_events
WHERE town_id = ANY (@town_ids::uuid[]) AND event_type = 'agent_dispatch_failed' AND created_at >= @since
  AND state <> 'pending' AND processed_tick_id <= @tick_id::bigint
GROUP BY town_id;

-- name: QuietTicksFinish :exec
-- QuietTicksFinish writes the reconciler_ticks rows of a batch of quiet ticks (clock @now,
-- the batch's phase times shared out) and schedules each town's next tick, in one
-- statement. The towns update touches unindexed columns only (HOT).
WITH q AS (
    SELECT unnest(@town_ids::uuid[]) AS town_id, unnest(@tick_ids::bigint[]) AS tick_id,
           unnest(@next_tick_ats::timestamptz[]) AS next_tick_at
), ins AS (
    INSERT INTO reconciler_ticks (tick_id, started_at, town_id, wall_clock_us, snapshot_us, reconcile_us, next_tick_ms)
    SELECT q.tick_id, @now, q.town_id, @wall_clock_us::int, @snapshot_us::int, @reconcile_us::int,
           (extract(epoch FROM q.next_tick_at - @now) * 1000)::int
    FROM q
)
UPDATE towns t SET last_tick_at = @now, next_tick_at = q.next_tick_at, tick_count = t.tick_count + 1
FROM q WHERE t.town_id = ANY (@town_ids::uuid[]) AND t.town_id = q.town_id;
