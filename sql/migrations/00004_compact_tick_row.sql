-- A compact reconciler_ticks row: one is written per tick, so its size is paid at tick
-- rate (ISSUE 8: at most 200 bytes per row, heap and index). Compared with 00001:
--   * started_at is the clock the tick reconciled with (clock_at is gone: they were the
--     same instant but for the microseconds between reading the wall clock twice);
--   * next_tick_at becomes next_tick_ms, the delay after started_at (int4, not timestamptz);
--   * counts that stay small per tick are smallint (writers saturate at 32767);
--   * worker_id is gone (the tick's log line names the worker);
--   * actions_by_type is bytea: per action type that occurred, its code (one byte, from
--     tick_action_types) and its count (two bytes, big-endian, saturating) — 3 bytes a
--     type instead of ~30 in jsonb. gastown_actions_by_type(bytea) gives the jsonb back
--     for dashboards;
--   * the primary key (town_id, started_at, tick_id) becomes an index on (town_id, tick_id):
--     a town's ticks in order, eight bytes narrower per entry. tick_id comes from a sequence.
-- Columns are ordered widest first so no byte goes to alignment padding. Existing rows are
-- copied over into daily partitions of their own.

-- +goose Up
-- The codes of action types in reconciler_ticks.actions_by_type. A new action type gets a
-- new row here and in db's code table (a test compares the two); codes are never reused.
CREATE TABLE tick_action_types (
    code smallint PRIMARY KEY CHECK (code BETWEEN 1 AND 255),
    name text NOT NULL UNIQUE
);
INSERT INTO tick_action_types (code, name) VALUES
    (1, 'transition_bead'), (2, 'clear_bead_assignee'), (3, 'transition_agent'), (4, 'hook_agent'),
    (5, 'unhook_agent'), (6, 'dispatch_agent'), (7, 'notify_mayor'), (8, 'assign_bead'),
    (9, 'create_mr_bead'), (10, 'create_landing_mr'), (11, 'close_sibling_mrs'),
    (12, 'set_review_pr_url'), (13, 'reset_agent_dispatch_attempts'), (14, 'clear_agent_checkpoint'),
    (15, 'delete_agent'), (16, 'update_convoy_progress'), (17, 'set_convoy_ready_to_land'),
    (18, 'close_convoy'), (19, 'fail_convoy'), (20, 'stop_agent'), (21, 'poll_pr'), (22, 'merge_pr'),
    (23, 'send_nudge'), (24, 'create_triage_request'), (25, 'emit_event');

-- gastown_actions_by_type decodes a tick's action counts into {"type": count, ...}.
CREATE FUNCTION gastown_actions_by_type(counts bytea) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(t.name, (get_byte(counts, 3 * i + 1) << 8) | get_byte(counts, 3 * i + 2)), '{}'::jsonb)
    FROM generate_series(0, length(counts) / 3 - 1) AS i
    JOIN tick_action_types t ON t.code = get_byte(counts, 3 * i)
$$;

-- gastown_encode_actions is the inverse, for rows written as jsonb (the copy below).
CREATE FUNCTION gastown_encode_actions(by_type jsonb) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(set_byte(set_byte(set_byte('\x000000'::bytea, 0, t.code),
               1, least(e.value::int, 65535) >> 8), 2, least(e.value::int, 65535) & 255), ''::bytea ORDER BY t.code), ''::bytea)
    FROM jsonb_each_text(by_type) e
    JOIN tick_action_types t ON t.name = e.key
$$;

ALTER TABLE reconciler_ticks_default RENAME TO reconciler_ticks_default_v1;
-- +goose StatementBegin
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'reconciler_ticks'::regclass AND c.relname NOT LIKE '%\_v1' LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', part, part || '_v1');
    END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE reconciler_ticks RENAME TO reconciler_ticks_v1;

CREATE TABLE reconciler_ticks (
    tick_id                bigint NOT NULL DEFAULT nextval('reconciler_ticks_tick_id_seq'),
    started_at             timestamptz NOT NULL,
    town_id                uuid NOT NULL,
    wall_clock_us          integer NOT NULL,
    drain_us               integer NOT NULL DEFAULT 0,
    snapshot_us            integer NOT NULL DEFAULT 0,
    reconcile_us           integer NOT NULL DEFAULT 0,
    apply_us               integer NOT NULL DEFAULT 0,
    events_drained         integer NOT NULL DEFAULT 0,
    actions_emitted        integer NOT NULL DEFAULT 0,
    pending_event_count    integer NOT NULL DEFAULT 0,
    next_tick_ms           integer NOT NULL DEFAULT 0,
    events_failed          smallint NOT NULL DEFAULT 0,
    events_dead            smallint NOT NULL DEFAULT 0,
    heartbeats_applied     smallint NOT NULL DEFAULT 0,
    actions_skipped        smallint NOT NULL DEFAULT 0,
    side_effects_attempted smallint NOT NULL DEFAULT 0,
    side_effects_succeeded smallint NOT NULL DEFAULT 0,
    side_effects_failed    smallint NOT NULL DEFAULT 0,
    invariant_violations   smallint NOT NULL DEFAULT 0,
    actions_by_type        bytea NOT NULL DEFAULT ''
) PARTITION BY RANGE (started_at);
CREATE INDEX reconciler_ticks_town_tick ON reconciler_ticks (town_id, tick_id);
CREATE TABLE reconciler_ticks_default PARTITION OF reconciler_ticks DEFAULT;
SELECT gastown_ensure_tick_partitions(7);

-- +goose StatementBegin
DO $$
DECLARE
    d date;
    part text;
BEGIN
    FOR d IN SELECT DISTINCT (started_at AT TIME ZONE 'UTC')::date FROM reconciler_ticks_v1 LOOP
        part := 'reconciler_ticks_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF reconciler_ticks FOR VALUES FROM (%L) TO (%L)',
                part, (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

INSERT INTO reconciler_ticks (tick_id, started_at, town_id, wall_clock_us, drain_us, snapshot_us,
    reconcile_us, apply_us, events_drained, actions_emitted, pending_event_count, next_tick_ms,
    events_failed, events_dead, heartbeats_applied, actions_skipped, side_effects_attempted,
    side_effects_succeeded, side_effects_failed, invariant_violations, actions_by_type)
SELECT tick_id, clock_at, town_id, wall_clock_us, drain_us, snapshot_us,
    reconcile_us, apply_us, events_drained, actions_emitted, pending_event_count,
    coalesce(least(greatest(extract(epoch FROM next_tick_at - clock_at) * 1000, 0), 2147483647)::integer, 0),
    least(events_failed, 32767), least(events_dead, 32767), least(heartbeats_applied, 32767),
    least(actions_skipped, 32767), least(side_effects_attempted, 32767),
    least(side_effects_succeeded, 32767), least(side_effects_failed, 32767),
    least(invariant_violations, 32767), gastown_encode_actions(actions_by_type)
FROM reconciler_ticks_v1;
DROP TABLE reconciler_ticks_v1;

-- +goose Down
ALTER TABLE reconciler_ticks_default RENAME TO reconciler_ticks_default_v2;
-- +goose StatementBegin
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'reconciler_ticks'::regclass AND c.relname NOT LIKE '%\_v2' LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', part, part || '_v2');
    END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE reconciler_ticks RENAME TO reconciler_ticks_v2;
CREATE TABLE reconciler_ticks (
    tick_id                bigint NOT NULL DEFAULT nextval('reconciler_ticks_tick_id_seq'),
    town_id                uuid NOT NULL,
    started_at             timestamptz NOT NULL,
    clock_at               timestamptz NOT NULL,
    wall_clock_us          integer NOT NULL,
    drain_us               integer NOT NULL DEFAULT 0,
    snapshot_us            integer NOT NULL DEFAULT 0,
    reconcile_us           integer NOT NULL DEFAULT 0,
    apply_us               integer NOT NULL DEFAULT 0,
    events_drained         integer NOT NULL DEFAULT 0,
    events_failed          integer NOT NULL DEFAULT 0,
    events_dead            integer NOT NULL DEFAULT 0,
    heartbeats_applied     integer NOT NULL DEFAULT 0,
    actions_emitted        integer NOT NULL DEFAULT 0,
    actions_skipped        integer NOT NULL DEFAULT 0,
    actions_by_type        jsonb NOT NULL DEFAULT '{}',
    side_effects_attempted integer NOT NULL DEFAULT 0,
    side_effects_succeeded integer NOT NULL DEFAULT 0,
    side_effects_failed    integer NOT NULL DEFAULT 0,
    invariant_violations   integer NOT NULL DEFAULT 0,
    pending_event_count    integer NOT NULL DEFAULT 0,
    next_tick_at           timestamptz,
    worker_id              text,
    PRIMARY KEY (town_id, started_at, tick_id)
) PARTITION BY RANGE (started_at);
CREATE TABLE reconciler_ticks_default PARTITION OF reconciler_ticks DEFAULT;
-- +goose StatementBegin
DO $$
DECLARE
    d date;
    part text;
BEGIN
    FOR d IN SELECT DISTINCT (started_at AT TIME ZONE 'UTC')::date FROM reconciler_ticks_v2 LOOP
        part := 'reconciler_ticks_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF reconciler_ticks FOR VALUES FROM (%L) TO (%L)',
                part, (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd
SELECT gastown_ensure_tick_partitions(7);
INSERT INTO reconciler_ticks (tick_id, town_id, started_at, clock_at, wall_clock_us, drain_us,
    snapshot_us, reconcile_us, apply_us, events_drained, events_failed, events_dead,
    heartbeats_applied, actions_emitted, actions_skipped, actions_by_type,
    side_effects_attempted, side_effects_succeeded, side_effects_failed,
    invariant_violations, pending_event_count, next_tick_at)
SELECT tick_id, town_id, started_at, started_at, wall_clock_us, drain_us, snapshot_us,
    reconcile_us, apply_us, events_drained, events_failed, events_dead, heartbeats_applied,
    actions_emitted, actions_skipped, gastown_actions_by_type(actions_by_type), side_effects_attempted,
    side_effects_succeeded, side_effects_failed, invariant_violations, pending_event_count,
    started_at + next_tick_ms * interval '1 millisecond'
FROM reconciler_ticks_v2;
DROP TABLE reconciler_ticks_v2;
DROP FUNCTION gastown_encode_actions(jsonb);
DROP FUNCTION gastown_actions_by_type(bytea);
DROP TABLE tick_action_types;
