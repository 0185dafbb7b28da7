-- The tick floor: the rows a tick of one event writes, as pgbench runs them (one script
-- execution is one tick). An append commits the event and its tick job; River's fetch
-- marks the job running; the tick locks its town, marks the event processed, changes one
-- bead (with its activity-feed row) and one agent, writes its reconciler_ticks and
-- tick_inputs rows, schedules the town and deletes its job, and commits. No reads beyond
-- the lock, no rules, no round trips but pgbench's: what gastown's schema costs Postgres
-- for one tick, whatever the code around it does.
\set n random(1, :towns)
SELECT town_id AS t, bead_id AS b, agent_id AS a FROM bench_floor_towns WHERE n = :n \gset
BEGIN;
INSERT INTO town_events (town_id, event_id, event_type, bead_id, payload, created_at)
    VALUES (:t, gen_random_uuid(), 'bead_status_changed', :b, '{"status": "in_progress"}', now()) RETURNING seq \gset
INSERT INTO river_job (args, kind, max_attempts, priority, queue, state)
    VALUES (jsonb_build_object('town_id', :t::text), 'bench_floor_tick', 25, 1, 'bench_floor', 'available') RETURNING id AS j \gset
END;
UPDATE river_job SET state = 'running', attempt = attempt + 1, attempted_at = now() WHERE id = :j;
BEGIN;
SELECT 1 FROM towns WHERE town_id = :t FOR NO KEY UPDATE;
UPDATE town_events SET state = 'processed', processed_at = now(), attempts = attempts + 1 WHERE town_id = :t AND seq = :seq;
UPDATE beads SET status = 'in_progress', updated_at = now() WHERE town_id = :t AND bead_id = :b;
INSERT INTO bead_events (town_id, bead_id, event_type, old_value, new_value, created_at)
    VALUES (:t, :b, 'status_changed', 'open', 'in_progress', now());
UPDATE agents SET status = 'working', last_activity_at = now() WHERE town_id = :t AND agent_id = :a;
INSERT INTO reconciler_ticks (started_at, town_id, wall_clock_us) VALUES (now(), :t, 1000) RETURNING tick_id AS k \gset
INSERT INTO tick_inputs (town_id, tick_id, clock_at) VALUES (:t, :k, now());
UPDATE towns SET next_tick_at = now() + interval '5 seconds', last_tick_at = now(), tick_count = tick_count + 1 WHERE town_id = :t;
DELETE FROM river_job WHERE id = :j;
END;
