-- town_checkpoints: a full copy of one town's state at a tick boundary (after tick
-- tick_id; 0 = before its first tick), taken when the town is created, every so many
-- recorded ticks or so much time, and on demand. A faithful replay restores the latest
-- checkpoint at or before its window inside a transaction it rolls back, then re-runs the
-- recorded ticks (tick_inputs) from there (ISSUE 9). state holds the town row's
-- replay-relevant columns and every row of the town's state tables, as to_jsonb renders
-- them; state_hash is reconciler.StateHash of that state.

-- +goose Up
CREATE TABLE town_checkpoints (
    town_id    uuid NOT NULL REFERENCES towns ON DELETE CASCADE,
    tick_id    bigint NOT NULL,
    taken_at   timestamptz NOT NULL,
    state      jsonb NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    state_hash bigint NOT NULL,
    PRIMARY KEY (town_id, tick_id)
);
-- Where the town's checkpointing stands, on the row its ticks lock anyway (no index on
-- these columns: their updates stay HOT).
ALTER TABLE towns
    ADD COLUMN checkpoint_tick_id     bigint,
    ADD COLUMN checkpoint_at          timestamptz,
    ADD COLUMN records_since_checkpoint integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE towns DROP COLUMN checkpoint_tick_id, DROP COLUMN checkpoint_at, DROP COLUMN records_since_checkpoint;
DROP TABLE town_checkpoints;
