package jobs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
)

// A tick job whose worker died stays "running" in River until the rescuer, and blocks any
// new tick of its town (tick jobs are unique per town; appends count on a running tick).
// Every worker process notices that no tick holds the town, cancels the orphan and wakes
// the town, so its events are applied in seconds.
func TestOrphanedTickJobDoesNotStallItsTown(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{workers: true, cfg: Config{SweepInterval: 200 * time.Millisecond}})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	eventually(t, 5*time.Second, func() bool { has, _ := b.store.HasPendingEvents(ctx, townID); return !has }, "rig created")

	// What a killed worker leaves behind: the town's tick job, running, attempted a while
	// ago, by a client that will never finish it.
	res, err := b.svc.Client.Insert(ctx, TickTownArgs{TownID: townID}, nil)
	require.NoError(t, err)
	_, err = b.store.Pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '10 seconds',
		attempted_by = '{dead-worker}' WHERE id = $1`, res.Job.ID)
	require.NoError(t, err)

	ev := beadCreated(rigID, "after the crash", heldLabel)
	_, err = b.svc.Events.Append(ctx, townID, ev)
	require.NoError(t, err)
	took := eventually(t, 10*time.Second, func() bool {
		_, err := b.store.GetBead(ctx, townID, ev.BeadID)
		return err == nil
	}, "the event is applied although the town's tick job is orphaned")
	t.Logf("applied %s after the append", took)
}

// The tick finishes its own job in its transaction (db.CompleteTickJob): a running job's
// row is deleted with the tick's commit; a job that is no longer running — cancelled as an
// orphan while its worker was slow — fails the completion, so that tick rolls back and the
// town's new tick applies its events instead.
func TestTickCompletesOnlyItsRunningJob(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, _ := b.newTown(t)
	res, err := b.svc.Client.Insert(ctx, TickTownArgs{TownID: townID}, nil)
	require.NoError(t, err)
	id := res.Job.ID
	state := func() string {
		s := "gone"
		err := b.store.Pool.QueryRow(ctx, `SELECT state FROM river_job WHERE id = $1`, id).Scan(&s)
		if !errors.Is(err, pgx.ErrNoRows) {
			require.NoError(t, err)
		}
		return s
	}
	complete := func() error {
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		if err := db.CompleteTickJob(ctx, tx, id); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}

	require.Error(t, complete(), "an available job is not the tick's to complete")
	require.Equal(t, "available", state())

	_, err = b.store.Pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`, id)
	require.NoError(t, err)
	rolledBack := func() error { // a completion whose transaction then rolls back
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		return db.CompleteTickJob(ctx, tx, id)
	}
	require.NoError(t, rolledBack())
	require.Equal(t, "running", state(), "the job's row goes only with the tick's commit")
	require.NoError(t, complete())
	require.Equal(t, "gone", state(), "the tick's commit deletes its job")

	res, err = b.svc.Client.Insert(ctx, TickTownArgs{TownID: townID}, nil)
	require.NoError(t, err)
	id = res.Job.ID
	_, err = b.store.Pool.Exec(ctx, `UPDATE river_job SET state = 'running', attempt = 1, attempted_at = now() WHERE id = $1`, id)
	require.NoError(t, err)
	won, err := b.store.CancelOrphanedTick(ctx, id)
	require.NoError(t, err)
	require.True(t, won)
	err = complete()
	require.ErrorContains(t, err, "no longer running")
	require.Equal(t, "cancelled", state())
}

// An append of several events commits them before it enqueues a tick for a town that has
// none. When that enqueue fails (or the process dies first: the chaos test's "appended"
// stage), the append has still succeeded — its events are committed — and the sweep wakes
// the town.
func TestAppendWhoseTickWasNotEnqueuedIsLeftToTheSweep(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	var failed atomic.Int32
	hooks := testHooks{failpoint: func(_ context.Context, stage, _ string) error {
		if stage == "appended" && failing.Load() {
			failed.Add(1)
			return errors.New("enqueue failed")
		}
		return nil
	}}
	b := setup(t, testOpts{workers: true, hooks: hooks, cfg: Config{SweepInterval: time.Second}})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	eventually(t, 5*time.Second, func() bool { has, _ := b.store.HasPendingEvents(ctx, townID); return !has }, "rig created")
	ticks := func() int {
		t.Helper()
		var n int
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'tick_town'
			AND state IN ('available', 'running') AND args ->> 'town_id' = $1`, townID).Scan(&n))
		return n
	}
	eventually(t, 5*time.Second, func() bool { return ticks() == 0 }, "no tick waits or runs")

	failing.Store(true)
	ev := beadCreated(rigID, "no tick for me", heldLabel)
	out, err := b.svc.Events.Append(ctx, townID, ev, beadCreated(rigID, "nor for me", heldLabel))
	require.NoError(t, err, "the events committed: the append succeeded")
	require.Len(t, out, 2)
	require.EqualValues(t, 1, failed.Load(), "the append reached its failpoint once")
	require.Zero(t, ticks(), "several events: the append left the tick to what follows its commit")
	took := eventually(t, 10*time.Second, func() bool {
		_, err := b.store.GetBead(ctx, townID, ev.BeadID)
		return err == nil
	}, "the sweep wakes the town and its tick applies the event")
	t.Logf("applied %s after the append", took)
}
