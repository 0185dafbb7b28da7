package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/jobs"
)

// TestWorkerKilledAtEveryStageOfATick kills a worker process with SIGKILL at chosen points
// of a tick or side-effect job (jobs.Stages: inside the drain, after the apply, after the
// tick's record, after the job's completion but before the commit, after the commit, after
// a side effect's call, after an append committed events of a town with no tick but before
// it enqueued one), round after round, while a second worker process and a stream
// of issues go on. The killed process is the chaos build, which kills itself there.
//
// After each kill the town whose tick (or job) died must tick again within 10 s. After
// all rounds, besides everything fleet.checkExactlyOnce asserts (nothing lost, nothing
// applied twice, no overlapping ticks), the outbox: every side-effect job belongs to a
// tick that committed, every committed tick has exactly the jobs it counted (a merge
// already queued is not queued twice), and every job ended completed with exactly one
// outcome event — or, for the kinds River does not retry by design (the rules offer them
// again: messages, PR polls and merges), discarded once the rescuer found it stuck.
//
// make test runs one round per stage (GASTOWN_CHAOS_ROUNDS, make test/chaos: 60).
func TestWorkerKilledAtEveryStageOfATick(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and kills worker processes")
	}
	// Not parallel: with the contention test's three processes beside it, the server's 100
	// connections would run out.
	rounds := fromEnv(t, "GASTOWN_CHAOS_ROUNDS", len(jobs.Stages), strconv.Atoi)
	ctx := context.Background()
	f := newFleet(t, 30, true)
	flags := []string{"--tick-workers", "4", "--side-effect-workers", "8", "--max-conns", "14",
		"--active-interval", "500ms", "--idle-interval", "2s", "--sweep-interval", "250ms",
		"--tick-timeout", "5s", "--start-timeout", "5s", "--completed-job-retention", "1h",
		"--sim-work", "300ms", "--sim-heartbeat", "1s"}
	steady := f.serve(nil, flags...)

	stop := make(chan struct{})
	streamed := make(chan struct{})
	go func() { f.stream(stop, 2, 40*time.Millisecond); close(streamed) }()

	// A side effect's stage first: its job waits for River's rescuer (a minute or so), which
	// then overlaps the other rounds.
	stages := append([]string{"effect_done"}, slices.DeleteFunc(slices.Clone(jobs.Stages), func(s string) bool { return s == "effect_done" })...)
	killLine := regexp.MustCompile(`chaos: SIGKILL at (\w+) #(\d+) town ([0-9a-f-]+)`)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	slowest := map[string]time.Duration{}
	for r := range rounds {
		stage, n := stages[r%len(stages)], 1+rng.IntN(8)
		victim := f.serve([]string{fmt.Sprintf("GASTOWN_CHAOS_KILL_AT=%s:%d", stage, n)}, flags...)
		select {
		case <-victim.done:
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: the worker never reached %s #%d; its stderr:\n%s", r, stage, n, victim.stderr)
		}
		killedAt := time.Now()
		ws, ok := victim.cmd.ProcessState.Sys().(syscall.WaitStatus)
		require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "round %d: the worker was not killed at %s: %s\n%s", r, stage, victim.cmd.ProcessState, victim.stderr)
		m := killLine.FindStringSubmatch(victim.stderr.String())
		require.NotNil(t, m, "round %d: no kill line in\n%s", r, victim.stderr)
		town := m[3]
		// The town whose tick or job died ticks again.
		var again time.Time
		waitFor(t, 15*time.Second, func() bool {
			err := f.pool.QueryRow(ctx, `SELECT min(started_at) FROM reconciler_ticks WHERE town_id = $1 AND started_at > $2`, town, killedAt).Scan(&again)
			return err == nil && !again.IsZero()
		})
		slowest[stage] = max(slowest[stage], again.Sub(killedAt))
		require.LessOrEqual(t, again.Sub(killedAt), 10*time.Second, "round %d: town %s ticked again only after %s", r, town, again.Sub(killedAt))
	}
	close(stop)
	<-streamed
	stoppedAt := time.Now()
	f.waitApplied(60 * time.Second)
	// Every side-effect job from before the stop settles: killed ones are rescued by
	// River (after the rescue time, 40 s here) and run again or are discarded.
	waitFor(t, 3*time.Minute, func() bool {
		var open int
		err := f.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE queue = $1 AND created_at < $2
			AND state NOT IN ('completed', 'discarded', 'cancelled')`, jobs.QueueSideEffects, stoppedAt).Scan(&open)
		return err == nil && open == 0
	})
	steady.stop()

	issues, ticks := f.checkExactlyOnce()
	var orphaned, miscounted, unreported, lost, rescued, jobsTotal int
	require.NoError(t, f.pool.QueryRow(ctx, `
WITH j AS (
  SELECT args ->> 'town_id' AS town, (args ->> 'tick_id')::bigint AS tick, count(*) AS n
  FROM river_job WHERE queue = $1 GROUP BY 1, 2)
SELECT
  (SELECT count(*) FROM j WHERE NOT EXISTS (SELECT 1 FROM reconciler_ticks k WHERE k.town_id::text = j.town AND k.tick_id = j.tick)),
  (SELECT count(*) FROM reconciler_ticks k LEFT JOIN j ON j.town = k.town_id::text AND j.tick = k.tick_id
   WHERE k.side_effects_attempted <> coalesce(j.n, 0)
     AND NOT (coalesce(j.n, 0) < k.side_effects_attempted AND gastown_actions_by_type(k.actions_by_type) ? 'merge_pr')),
  (SELECT count(*) FROM river_job r WHERE r.queue = $1 AND r.state = 'completed'
     AND (SELECT count(*) FROM town_events e WHERE e.town_id = (r.args ->> 'town_id')::uuid AND e.idempotency_key = 'job:' || r.id) <> 1),
  (SELECT count(*) FROM river_job r WHERE r.queue = $1 AND r.state IN ('discarded', 'cancelled')
     AND NOT (r.kind IN ('send_message', 'poll_pr', 'merge_pr') AND r.errors::text ILIKE '%rescue%')),
  (SELECT count(*) FROM river_job r WHERE r.queue = $1 AND r.errors::text ILIKE '%rescue%'),
  (SELECT count(*) FROM river_job r WHERE r.queue = $1)`, jobs.QueueSideEffects).
		Scan(&orphaned, &miscounted, &unreported, &lost, &rescued, &jobsTotal))
	require.Zero(t, orphaned, "no side-effect job without the committed tick that asked for it")
	require.Zero(t, miscounted, "each committed tick has exactly the side-effect jobs it counted")
	require.Zero(t, unreported, "each completed side-effect job reported exactly one outcome")
	require.Zero(t, lost, "no side-effect job given up, other than one not retried by design after a kill")
	t.Logf("%d rounds of SIGKILL (%v), towns ticking again within %v; %d issues applied once, %d ticks, %d side-effect jobs (%d rescued after a kill), none lost or doubled",
		rounds, stages[:min(rounds, len(stages))], slowest, issues, ticks, jobsTotal, rescued)
}
