package jobs

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"
)

// A tick job that failed is retried within seconds, however often it failed: while it
// waits it is the town's only tick job.
func TestTickRetryIsShortAndCapped(t *testing.T) {
	t.Parallel()
	require.Equal(t, 100*time.Millisecond, tickRetryDelay(1))
	require.Equal(t, 200*time.Millisecond, tickRetryDelay(2))
	for attempt := 1; attempt <= 100; attempt++ {
		require.LessOrEqual(t, tickRetryDelay(attempt), 5*time.Second, "attempt %d", attempt)
		require.Positive(t, tickRetryDelay(attempt))
	}
	var w river.Worker[TickTownArgs] = &TickTownWorker{}
	j := job(1, TickTownArgs{})
	j.Attempt = 25
	next := w.NextRetry(j)
	require.WithinDuration(t, time.Now().Add(5*time.Second), next, time.Second, "not River's attempt⁴ seconds")
}

// TestFailingTicksAreRetriedWithinSeconds: a town whose ticks fail five times in a row
// (a failpoint after the drain rolls each back) ticks again within seconds of the
// cause going away; River's default backoff would wait 1 + 16 + 81 + 256 + 625 s.
func TestFailingTicksAreRetriedWithinSeconds(t *testing.T) {
	t.Parallel()
	var failures atomic.Int32
	b := setup(t, testOpts{workers: true, hooks: testHooks{failpoint: func(_ context.Context, stage, _ string) error {
		if stage == "drained" && failures.Add(1) <= 5 {
			return errors.New("injected tick failure")
		}
		return nil
	}}})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	appended, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "w"))
	require.NoError(t, err)
	start := time.Now()
	eventually(t, 15*time.Second, func() bool {
		evs, err := b.store.ListEvents(ctx, townID, "processed", 10)
		require.NoError(t, err)
		for _, e := range evs {
			if e.Seq == appended[0].Seq {
				return true
			}
		}
		return false
	}, "the event applied once the ticks stop failing")
	require.GreaterOrEqual(t, failures.Load(), int32(6), "five failed ticks, then one that committed")
	t.Logf("applied %s after the append, through five failed ticks", time.Since(start).Round(time.Millisecond))
}
