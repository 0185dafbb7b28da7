-- Per-minute rollup of reconciler_ticks per town, kept longer than the ticks themselves
-- (90 days by default against 7), so dashboards over weeks stay fast.

-- +goose Up
CREATE TABLE reconciler_ticks_minutely (
    town_id                uuid NOT NULL,
    minute                 timestamptz NOT NULL,
    ticks                  integer NOT NULL,
    events_drained         integer NOT NULL,
    events_dead            integer NOT NULL,
    actions_emitted        integer NOT NULL,
    actions_skipped        integer NOT NULL,
    actions_by_type        jsonb NOT NULL DEFAULT '{}',
    side_effects_attempted integer NOT NULL,
    side_effects_succeeded integer NOT NULL,
    side_effects_failed    integer NOT NULL,
    invariant_violations   integer NOT NULL, -- the most seen by one tick of the minute
    wall_clock_us_sum      bigint NOT NULL,
    wall_clock_us_max      integer NOT NULL,
    pending_max            integer NOT NULL,
    pending_last           integer NOT NULL,
    PRIMARY KEY (minute, town_id)
);
CREATE INDEX reconciler_ticks_minutely_town ON reconciler_ticks_minutely (town_id, minute);

-- rollup_watermarks remembers up to where each rollup has run.
CREATE TABLE rollup_watermarks (
    name  text PRIMARY KEY,
    until timestamptz NOT NULL
);

-- gastown_drop_tick_partitions drops the daily partitions of reconciler_ticks that end at or
-- before the given day. Each drop waits at most 200 ms for its lock, so retention never
-- stalls the ticks writing to today's partition; a partition it could not lock is left for
-- the next run.
-- +goose StatementBegin
CREATE FUNCTION gastown_drop_tick_partitions(before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part text;
    dropped integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'reconciler_ticks' AND c.relname ~ '^reconciler_ticks_[0-9]{8}$'
          AND to_date(substring(c.relname from '[0-9]{8}$'), 'YYYYMMDD') + 1 <= before
        ORDER BY c.relname
    LOOP
        BEGIN
            EXECUTE format('DROP TABLE %I', part);
            dropped := dropped + 1;
        EXCEPTION WHEN lock_not_available THEN
            RAISE NOTICE 'partition % is busy; left for the next run', part;
        END;
    END LOOP;
    RETURN dropped;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION gastown_drop_tick_partitions(date);
DROP TABLE rollup_watermarks;
DROP TABLE reconciler_ticks_minutely;
