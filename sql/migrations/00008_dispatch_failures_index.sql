-- Every tick's snapshot counts the town's recent dispatch failures (the circuit breaker).
-- On (town_id, created_at) that count read every event of the window: in a town receiving
-- thousands of events a second, tens of thousands of rows per tick. The partial index
-- holds only the failures.

-- +goose Up
CREATE INDEX town_events_dispatch_failed ON town_events (town_id, created_at) WHERE event_type = 'agent_dispatch_failed';

-- +goose Down
DROP INDEX town_events_dispatch_failed;
