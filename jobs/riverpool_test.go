package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// River's own statements commit without waiting for their flush; gastown's (appends,
// ticks and the jobs they insert) still wait.
func TestRiverWorksOnItsOwnPoolWithAsynchronousCommits(t *testing.T) {
	b := setup(t, testOpts{workers: true, riverPool: true})
	ctx := context.Background()
	setting := func(scan func(dest ...any) error) string {
		var s string
		require.NoError(t, scan(&s))
		return s
	}
	river := setting(b.svc.Client.Driver().GetExecutor().QueryRow(ctx, "SELECT current_setting('synchronous_commit')").Scan)
	ours := setting(b.store.Pool.QueryRow(ctx, "SELECT current_setting('synchronous_commit')").Scan)
	require.Equal(t, "off", river, "River's fetches and completions")
	require.Equal(t, "on", ours, "appends and ticks must wait for their flush")

	// The service still works end to end on the two pools: an event reaches its tick.
	town, rig := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, town, beadCreated(rig, "on two pools"))
	require.NoError(t, err)
	eventually(t, 10*time.Second, func() bool {
		pending, err := b.store.HasPendingEvents(ctx, town)
		return err == nil && !pending
	}, "the event was applied")
}
