-- Every tick that took an input or changed the town records what a faithful replay needs
-- besides the events it applied (which carry processed_tick_id) and its clock
-- (reconciler_ticks.started_at, also kept here): the heartbeats it took, the events it
-- drained but did not apply, the actions it emitted, and a hash of the state it left
-- (reconciler.StateHash). A tick with none of these (an idle town's) writes no row: the
-- state is the previous row's. Rows are pruned with the events (the events' retention).

-- +goose Up
ALTER TABLE tick_inputs
    ADD COLUMN failed_seqs bigint[] NOT NULL DEFAULT '{}',
    ADD COLUMN actions     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(actions) = 'array'),
    ADD COLUMN state_hash  bigint NOT NULL DEFAULT 0;
CREATE INDEX tick_inputs_town_clock ON tick_inputs (town_id, clock_at);

-- +goose Down
DROP INDEX tick_inputs_town_clock;
ALTER TABLE tick_inputs DROP COLUMN failed_seqs, DROP COLUMN actions, DROP COLUMN state_hash;
