package bench_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/bench"
	"gastown/db/dbtest"
)

// run runs a workload at a hundredth of its size on databases of the test's own.
func run(t *testing.T, workload string, d time.Duration) *bench.Report {
	return runAt(t, workload, d, 0)
}

func runAt(t *testing.T, workload string, d time.Duration, rate float64) *bench.Report {
	t.Helper()
	prefix := fmt.Sprintf("gastown_bench_test_%s_%d", workload, os.Getpid())
	t.Cleanup(func() { dropDatabase(t, prefix) })
	rep, err := bench.Run(context.Background(), bench.Options{
		DatabaseURL: dbtest.ServerURL(), DatabasePrefix: prefix, Workload: workload, Duration: d, Scale: 0.01, Rate: rate,
		TickWorkers: 4, SideEffectWorkers: 4,
	})
	require.NoError(t, err)
	require.Equal(t, workload, rep.Workload)
	require.NotEmpty(t, rep.Targets, "every workload reports its targets")
	return rep
}

func dropDatabase(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbtest.ServerURL())
	require.NoError(t, err)
	defer conn.Close(ctx) //nolint:errcheck
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	require.NoError(t, err)
}

// The harness's workloads run end to end and measure something real (small, without the
// baselines; `make bench` runs them full size).
func TestBurstWorkloadCoalesces(t *testing.T) {
	t.Parallel()
	rep := run(t, "burst", time.Second)
	require.Equal(t, 100, rep.BurstEvents)
	require.Positive(t, rep.BurstTicks)
	require.LessOrEqual(t, rep.BurstTicks, rep.BurstBound)
	require.Positive(t, rep.EventsPerSec)
}

func TestLargeWorkloadMeasuresEverySize(t *testing.T) {
	t.Parallel()
	rep := run(t, "large", time.Second)
	require.Len(t, rep.Sizes, 4)
	for _, s := range rep.Sizes {
		require.Positive(t, s.SnapshotP50)
		require.Positive(t, s.ReconcileP50)
		require.Positive(t, s.ReconcileAloneP50, "the reconcile timed alone, for the growth target")
	}
}

func TestActiveWorkloadTicksAndMeasuresLatency(t *testing.T) {
	t.Parallel()
	rep := runAt(t, "active", 4*time.Second, 50) // a fixed latency-phase rate: capacity under a loaded CI varies
	require.Positive(t, rep.TicksPerSec)
	require.Positive(t, rep.EventsPerSec)
	require.Positive(t, rep.LatencyP50ms)
	require.GreaterOrEqual(t, rep.LatencyP99ms, rep.LatencyP50ms)
	require.Positive(t, rep.LatencyTicksPerSec, "the latency phase's ticks/s")
	require.InDelta(t, rep.LatencyTicksPerSec/rep.TicksPerSec, rep.LatencyLoad, 1e-9)
	require.Contains(t, rep.Phases, "snapshot")
}

// The hot workload measures the other towns with and without the hot town, and the part
// of their latency spent queued (each event's queued time is part of its latency, so its
// p99 cannot exceed the latency's).
func TestHotWorkloadComparesTheOtherTowns(t *testing.T) {
	t.Parallel()
	rep := run(t, "hot", 3*time.Second)
	require.Positive(t, rep.HotTownEventsPerSec)
	require.Positive(t, rep.OtherTownsP99Alone)
	require.Positive(t, rep.OtherTownsP99)
	require.Positive(t, rep.OtherTownsQueuedP99Alone+rep.OtherTownsQueuedP99, "a queued part is measured")
	require.LessOrEqual(t, rep.OtherTownsQueuedP99Alone, rep.OtherTownsP99Alone)
	require.LessOrEqual(t, rep.OtherTownsQueuedP99, rep.OtherTownsP99)
}

// A worker process killed with SIGKILL mid-run (the River leader) loses nothing and
// applies nothing twice, and its towns tick again within seconds. Real processes: the
// test builds the gastown binary.
func TestCrashWorkloadKillsAWorkerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs worker processes")
	}
	t.Parallel()
	exe := filepath.Join(t.TempDir(), "gastown")
	out, err := exec.Command("go", "build", "-o", exe, "gastown/cmd/gastown").CombinedOutput()
	require.NoError(t, err, "%s", out)
	prefix := fmt.Sprintf("gastown_bench_test_crash_%d", os.Getpid())
	t.Cleanup(func() { dropDatabase(t, prefix) })
	// The kill aims at a running tick, but a tick may commit between the look and the
	// signal: run again (up to three times) until the worker dies mid-tick.
	var rep *bench.Report
	for range 3 {
		var err error
		rep, err = bench.Run(context.Background(), bench.Options{
			DatabaseURL: dbtest.ServerURL(), DatabasePrefix: prefix, Workload: "crash", Duration: 8 * time.Second, Scale: 0.05,
			TickWorkers: 4, SideEffectWorkers: 4, Executable: exe,
		})
		require.NoError(t, err)
		if rep.CrashOrphanedTowns > 0 {
			break
		}
	}
	require.Positive(t, rep.CrashOrphanedTowns, "the worker died in the middle of a tick")
	for _, target := range rep.Targets {
		require.True(t, target.Met, "%s: %.2f (goal %s); %v", target.Name, target.Measured, target.Goal, rep.Notes)
	}
}
