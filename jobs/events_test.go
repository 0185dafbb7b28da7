package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// TestAppendEnqueuesTheTickRiverWould: a one-event append to a town with no tick inserts
// the tick job within its own statement (tickJob's row). River must take that row for its
// own — its insert of the same job is a duplicate of it — and every column must match a
// row River inserted itself; a second append joins the waiting job instead of adding one.
func TestAppendEnqueuesTheTickRiverWould(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testOpts{}) // no workers: jobs stay where they are
	ours, _ := b.newTown(t)   // its rig_created append enqueued the tick
	theirs, err := b.store.CreateTown(ctx, db.NewID(), "t", reconciler.TownConfig{}, time.Now())
	require.NoError(t, err)
	riverRes, err := b.svc.Client.Insert(ctx, TickTownArgs{TownID: theirs.ID}, nil)
	require.NoError(t, err)
	require.False(t, riverRes.UniqueSkippedAsDuplicate)

	type jobRow struct {
		ID                                             int64
		Args, Kind, Queue, State, Metadata, Tags, Bits string
		MaxAttempts, Priority, Attempt                 int
		Key                                            []byte
	}
	jobsOf := func(town string) []jobRow {
		t.Helper()
		rows, err := b.store.Pool.Query(ctx, `SELECT id, args::text, kind, queue, state::text, metadata::text, tags::text,
			unique_states::text, max_attempts, priority, attempt, unique_key
			FROM river_job WHERE kind = 'tick_town' AND args ->> 'town_id' = $1 ORDER BY id`, town)
		require.NoError(t, err)
		defer rows.Close()
		var out []jobRow
		for rows.Next() {
			var r jobRow
			require.NoError(t, rows.Scan(&r.ID, &r.Args, &r.Kind, &r.Queue, &r.State, &r.Metadata, &r.Tags, &r.Bits,
				&r.MaxAttempts, &r.Priority, &r.Attempt, &r.Key))
			out = append(out, r)
		}
		require.NoError(t, rows.Err())
		return out
	}

	mine := jobsOf(ours)
	require.Len(t, mine, 1, "the append enqueued one tick")
	river := jobsOf(theirs.ID)
	require.Len(t, river, 1)
	require.Equal(t, riverRes.Job.ID, river[0].ID)
	want, err := tickJob(theirs.ID)
	require.NoError(t, err)
	require.Equal(t, want.UniqueKey, river[0].Key, "tickJob's unique key is River's")
	a, r := mine[0], river[0]
	a.ID, r.ID, a.Key, r.Key = 0, 0, nil, nil
	r.Args = a.Args // the town differs
	require.NotEmpty(t, a.Bits)
	require.Equal(t, r, a, "the appended tick job is the row River writes")

	res, err := b.svc.Client.Insert(ctx, TickTownArgs{TownID: ours}, nil)
	require.NoError(t, err)
	require.True(t, res.UniqueSkippedAsDuplicate, "River takes the appended job for its own")
	require.Equal(t, mine[0].ID, res.Job.ID)

	_, err = b.svc.Events.Append(ctx, ours, db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}})
	require.NoError(t, err)
	require.Len(t, jobsOf(ours), 1, "the next append joins the waiting tick")
}
