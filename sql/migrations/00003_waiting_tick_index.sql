-- Finding a town's waiting or running tick job cheaply lets an event append join that
-- tick instead of re-inserting the unique job: River answers a duplicate insert by
-- updating the existing row, which rewrites it and, when the tick is running, waits for
-- that tick to commit — every append and the sweep queued behind running ticks. River's
-- migrations run before ours, so river_job exists here.

-- +goose Up
CREATE INDEX river_job_town_tick ON river_job ((args ->> 'town_id'), state)
    WHERE kind = 'tick_town' AND state IN ('available', 'running');

-- +goose Down
DROP INDEX river_job_town_tick;
