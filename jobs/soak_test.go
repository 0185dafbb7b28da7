package jobs

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"gastown/agentrt"
)

// TestSoakStaysFlat runs the workers with simulated agents (that crash and hang) under a
// moderate stream of issues, sampling goroutines, heap and database connections once a
// second: the last third of the run must stay within the bounds of the first third (with
// slack for the agents working at the moment; pool connections only in runs of 2 minutes
// or more, a short one is still filling its pool), and after the service stops no
// connection is held and no goroutine of it is left. GASTOWN_SOAK sets the duration (`make soak`: 10 minutes; default 20 s).
func TestSoakStaysFlat(t *testing.T) {
	d := fromEnv(t, "GASTOWN_SOAK", 20*time.Second, time.ParseDuration)
	// Not parallel: goroutines are counted process-wide.
	ignore := goleak.IgnoreCurrent()
	ctx := context.Background()
	b := setup(t, testOpts{workers: true, cfg: Config{ActiveInterval: 200 * time.Millisecond, SweepInterval: 200 * time.Millisecond},
		sim: agentrt.SimConfig{Seed: 3, HeartbeatInterval: 50 * time.Millisecond, WorkMin: 50 * time.Millisecond, WorkMax: 300 * time.Millisecond,
			CrashProb: 0.05, HangProb: 0.05}})
	var towns, rigs []string
	for range 20 {
		town, rig := b.newTown(t)
		towns, rigs = append(towns, town), append(rigs, rig)
	}

	type sample struct {
		goroutines int
		heap       uint64
		conns      int32
	}
	var samples []sample
	rng := rand.New(rand.NewPCG(5, 5))
	end := time.Now().Add(d)
	next := time.Now()
	for time.Now().Before(end) {
		k := rng.IntN(len(towns))
		_, err := b.svc.Events.Append(ctx, towns[k], beadCreated(rigs[k], "soak"))
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond) // ~20 issues/s
		if time.Now().After(next) {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			samples = append(samples, sample{runtime.NumGoroutine(), m.HeapInuse, b.store.Pool.Stat().TotalConns()})
			next = next.Add(time.Second)
		}
	}
	require.GreaterOrEqual(t, len(samples), 9)
	third := len(samples) / 3
	peak := func(ss []sample) sample {
		var p sample
		for _, s := range ss {
			p.goroutines, p.heap, p.conns = max(p.goroutines, s.goroutines), max(p.heap, s.heap), max(p.conns, s.conns)
		}
		return p
	}
	first, last := peak(samples[:third]), peak(samples[len(samples)-third:])
	t.Logf("%s, %d samples: goroutines %d → %d, heap %d → %d KiB, connections %d → %d (peaks of the first and last third)",
		d, len(samples), first.goroutines, last.goroutines, first.heap>>10, last.heap>>10, first.conns, last.conns)
	require.LessOrEqual(t, last.goroutines, first.goroutines*3/2+20, "goroutines grow")
	require.LessOrEqual(t, last.heap, first.heap*2+16<<20, "heap grows")
	if d >= 2*time.Minute {
		// A short run is still ramping its pool up (bounded by its size); a leak shows as
		// growth past the first third of a long one, and below as connections held after stop.
		require.LessOrEqual(t, last.conns, first.conns+4, "connections grow")
	}

	// Stop everything the test started; nothing of it may linger.
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	require.NoError(t, b.svc.Stop(stopCtx))
	b.sim.Close()
	// A connection released dirty is reset or closed in the background: give it a moment.
	eventually(t, 10*time.Second, func() bool { return b.store.Pool.Stat().AcquiredConns() == 0 },
		"every connection back in the pool once the workers stopped")
	b.store.Pool.Close()
	goleak.VerifyNone(t, ignore,
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}
