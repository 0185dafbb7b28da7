package main

import (
	"testing"
	"time"
)

// TestWorkerProcessesContendForTowns runs three `gastown serve --no-api` processes (8 tick
// workers each, simulated agents) on one database while issues stream into 1,000 towns
// for a bounded time, with duplicate tick jobs racing the queued ones; afterwards everything fleet.checkExactlyOnce asserts must hold:
// every event applied exactly once, no two ticks of a town overlapping, invariants kept.
func TestWorkerProcessesContendForTowns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs worker processes")
	}
	t.Parallel()
	f := newFleet(t, 1000, false)
	var procs []*process
	// 14 connections each, and River's own pool of up to 6 besides: the three stay under 60
	// of the server's 100, which make test shares with the packages running alongside.
	for range 3 {
		procs = append(procs, f.serve(nil, "--tick-workers", "8", "--side-effect-workers", "8", "--max-conns", "14", "--active-interval", "500ms"))
	}
	// Steady load: new issues at ~150/s into random towns for 8 s (make test/chaos: 60 s),
	// and three duplicate tick jobs of a random town every 5 ms, which only the town lock
	// keeps apart.
	duration := fromEnv(t, "GASTOWN_CONTENTION_DURATION", 8*time.Second, time.ParseDuration)
	stop := make(chan struct{})
	time.AfterFunc(duration, func() { close(stop) })
	go f.duplicateTicks(stop, 5*time.Millisecond)
	f.stream(stop, 3, 20*time.Millisecond)
	f.waitApplied(60 * time.Second) // let the fleet catch up
	for _, p := range procs {
		p.stop()
	}
	issues, ticks := f.checkExactlyOnce()
	t.Logf("3 worker processes, %d towns, %s: %d issues appended and applied once, %d ticks, none overlapping", len(f.towns), duration, issues, ticks)
}
