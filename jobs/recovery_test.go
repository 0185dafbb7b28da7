package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
