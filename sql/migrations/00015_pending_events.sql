-- A town's pending events are listed in pending_events, a narrow table of their own, and
-- no longer in a partial index of town_events on state. The index made marking an event
-- processed a change of an indexed column: Postgres wrote a new version of the row on
-- another page (the table is filled to the brim) and an entry in every index of
-- town_events, as the insert had — in the hot benchmark, index inserts were 44% of the
-- WAL and each event cost ~1,300 WAL bytes in all, and every other town's commit waited
-- for that WAL's flush (BENCHMARKS.md, fourteenth round, pg_waldump). Now an append
-- inserts the event and its pending_events row in one statement, and the mark deletes the
-- row and updates the event in place: no indexed column changes, and fillfactor 50 leaves
-- room on the page, so the update is HOT (no index entries).
--
-- pending_events has no foreign key: a check per appended row is what it would cost
-- (one for town_events' key to towns already costs appends ~20% of their throughput). The
-- statements that write town_events keep it exact (db.Store and sql/queries), TownDelete
-- deletes a town's rows; the state column of town_events stays the record.

-- +goose Up
DROP INDEX town_events_pending;
CREATE TABLE pending_events (
    town_id uuid   NOT NULL,
    seq     bigint NOT NULL,
    PRIMARY KEY (town_id, seq)
);
INSERT INTO pending_events (town_id, seq) SELECT town_id, seq FROM town_events WHERE state = 'pending';
ALTER TABLE town_events SET (fillfactor = 50);

-- +goose Down
ALTER TABLE town_events RESET (fillfactor);
DROP TABLE pending_events;
CREATE INDEX town_events_pending ON town_events (town_id, seq) WHERE state = 'pending';
