-- Finding a town's waiting tick job cheaply lets an event append join that tick instead
-- of re-inserting the unique job (River answers a duplicate insert by updating the
-- existing row: a new row version and a row lock per append). River's migrations run
-- before ours, so river_job exists here.

-- +goose Up
CREATE INDEX river_job_waiting_tick ON river_job ((args ->> 'town_id'))
    WHERE kind = 'tick_town' AND state = 'available';

-- +goose Down
DROP INDEX river_job_waiting_tick;
