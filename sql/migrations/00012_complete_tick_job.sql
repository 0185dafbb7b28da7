-- A tick completes its River job inside its own transaction and commits in the same
-- round trip (db.PipelinedTx). The completion must then fail the transaction by itself
-- when the job is no longer running (rescued or cancelled meanwhile): an UPDATE that
-- matches no row is not an error, and the COMMIT behind it would go through before the
-- worker could read the row count. The function raises instead.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION gastown_complete_tick_job(job_id bigint, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE river_job SET state = 'completed', finalized_at = at WHERE id = job_id AND state = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tick job % is no longer running', job_id USING ERRCODE = 'P0002';
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION gastown_complete_tick_job(bigint, timestamptz);
