-- Housekeeping offers mail again when its delivery request (metadata.delivery_requested_at,
-- written by a tick) is old. Bead metadata can also come from a client, so the value is
-- read through a cast that gives NULL instead of failing: a malformed value must not fail
-- every tick of its town.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION gastown_try_timestamptz(v text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN v::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION gastown_try_timestamptz(text);
