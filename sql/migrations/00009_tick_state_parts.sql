-- The state hash of a tick by part (town, rigs, beads, agents, dependencies, reviews,
-- convoys; reconciler.StateDigest), so that a replay whose state diverges says where.

-- +goose Up
ALTER TABLE tick_inputs ADD COLUMN state_parts bigint[] NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE tick_inputs DROP COLUMN state_parts;
