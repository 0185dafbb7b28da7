package db_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// The savepoints around events and actions send no statement of their own: SAVEPOINT and
// RELEASE ride with the held-back writes. Whatever way a scope fails — in Go before
// anything was sent, in Go after a read sent its SAVEPOINT, or in Postgres when its
// held-back write is refused at the flush — its writes are undone and the tick goes on;
// scopes that succeed keep theirs; a scope that ran nothing leaves no savepoint.
func TestSavepointsRideWithTheWrites(t *testing.T) {
	t.Parallel()
	store := dbtest.NewStore(t)
	ctx := context.Background()
	town, err := store.CreateTown(ctx, db.NewID(), "sp", reconciler.TownConfig{}, time.Now())
	require.NoError(t, err)
	tx, err := store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `CREATE TEMP TABLE sp_rows (id int PRIMARY KEY) ON COMMIT DROP`)
	require.NoError(t, err)
	tt, err := store.LockTown(ctx, tx, town.ID, time.Now(), false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)

	const insert = "-- name: SpInsert :exec\nINSERT INTO sp_rows (id) VALUES ($1)"
	write := func(q db.Querier, id int) { _, err := q.Exec(ctx, insert, id); require.NoError(t, err) }
	read := func(q db.Querier) {
		var n int
		require.NoError(t, q.QueryRow(ctx, `SELECT count(*) FROM sp_rows`).Scan(&n))
	}
	errWork := errors.New("the work failed")

	sent, _, werr := tt.Scope(ctx, func(q db.Querier) error { write(q, 1); return nil })
	require.NoError(t, werr)
	require.True(t, sent)
	sent, _, werr = tt.Scope(ctx, func(q db.Querier) error { write(q, 2); return errWork }) // fails before anything went out
	require.ErrorIs(t, werr, errWork)
	require.False(t, sent, "a scope that failed before sending anything sent its SAVEPOINT")
	sent, _, werr = tt.Scope(ctx, func(q db.Querier) error { read(q); write(q, 3); return errWork }) // the read sent its SAVEPOINT
	require.ErrorIs(t, werr, errWork)
	require.True(t, sent)
	_, _, werr = tt.Scope(ctx, func(q db.Querier) error { write(q, 1); return nil }) // Postgres refuses it at the flush
	require.Error(t, werr, "a duplicate key must fail its scope")
	_, _, werr = tt.Scope(ctx, func(q db.Querier) error { write(q, 4); return nil })
	require.NoError(t, werr, "the transaction goes on after a scope failed in Postgres")
	_, elided, werr := tt.Scope(ctx, func(db.Querier) error { return nil })
	require.NoError(t, werr)
	require.True(t, elided, "a scope that ran nothing left a savepoint")
	require.NoError(t, tt.Flush(ctx))

	rows, err := tx.Query(ctx, `SELECT id FROM sp_rows ORDER BY id`)
	require.NoError(t, err)
	var ids []int
	for rows.Next() {
		var id int
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int{1, 4}, ids)
	// Every savepoint was released or rolled back to and released.
	_, err = tx.Exec(ctx, `RELEASE SAVEPOINT gt_sp_1`)
	require.Error(t, err, "gt_sp_1 was still open")
}
