package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/jobs"
	"gastown/reconciler"
)

// TestWorkerProcessesContendForTowns runs three `gastown serve --no-api` processes (8 tick
// workers each, simulated agents) on one database while issues stream into 300 towns for
// a bounded time. Afterwards: every event applied exactly once by a committed tick, none
// dead; every issue created once (one "created" audit row each: a tick that overlapped
// another on the same town would have applied its bead_created events twice); each town's
// tick count equals its tick rows; no invariant of the reconciler's own state broken.
func TestWorkerProcessesContendForTowns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs worker processes")
	}
	t.Parallel()
	ctx := context.Background()
	exe := filepath.Join(t.TempDir(), "gastown")
	out, err := exec.Command("go", "build", "-o", exe, "gastown/cmd/gastown").CombinedOutput()
	require.NoError(t, err, "%s", out)
	url := dbtest.NewURL(t)
	pool, err := db.Connect(ctx, url, 16)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := db.NewStore(pool)
	front, err := jobs.New(jobs.Deps{Store: store, Logger: slog.New(slog.DiscardHandler)}, jobs.Config{}, false)
	require.NoError(t, err)

	const townCount = 300
	towns, rigs := make([]string, townCount), make([]string, townCount)
	for i := range townCount {
		town, err := store.CreateTown(ctx, db.NewID(), fmt.Sprint("c", i), reconciler.TownConfig{}, time.Now())
		require.NoError(t, err)
		towns[i], rigs[i] = town.ID, db.NewID()
		_, err = front.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rigs[i], Name: "r"}})
		require.NoError(t, err)
	}

	var procs []*exec.Cmd
	for range 3 {
		cmd := exec.Command(exe, "serve", "--no-api", "--database-url", url, "--tick-workers", "8", "--side-effect-workers", "8",
			"--log-level", "error", "--max-conns", "24", "--active-interval", "500ms")
		cmd.Env = append(os.Environ(), "GASTOWN_AGENT_TOKEN_SECRET=contention-test-secret", "SENTRY_DSN=")
		require.NoError(t, cmd.Start())
		procs = append(procs, cmd)
	}
	stopProcs := sync.OnceFunc(func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	})
	t.Cleanup(stopProcs)

	// Steady load: new issues at ~150/s into random towns for 8 s.
	var wg sync.WaitGroup
	deadline := time.Now().Add(8 * time.Second)
	var issues sync.Map
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for time.Now().Before(deadline) {
				k := rng.IntN(townCount)
				ev := db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(),
					Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: "contended", RigID: rigs[k], CreatedBy: "test"}}
				if _, err := front.Events.Append(ctx, towns[k], ev); err == nil {
					issues.Store(ev.BeadID, towns[k])
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	// Let the fleet catch up, then stop it.
	waitFor(t, 60*time.Second, func() bool {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE state = 'pending' AND event_type = 'bead_created'`).Scan(&waiting)
		return err == nil && waiting == 0
	})
	stopProcs()

	var created, dead, twice, unticked, stale int
	require.NoError(t, pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM town_events WHERE event_type = 'bead_created' AND state = 'processed'),
		(SELECT count(*) FROM town_events WHERE state = 'dead'),
		(SELECT count(*) FROM town_events WHERE attempts > 1),
		(SELECT count(*) FROM town_events e WHERE e.state = 'processed'
		   AND NOT EXISTS (SELECT 1 FROM reconciler_ticks k WHERE k.town_id = e.town_id AND k.tick_id = e.processed_tick_id)),
		(SELECT count(*) FROM town_events WHERE state = 'pending' AND created_at < now() - interval '10 seconds')`).
		Scan(&created, &dead, &twice, &unticked, &stale))
	n := 0
	issues.Range(func(_, _ any) bool { n++; return true })
	require.Positive(t, n)
	require.Equal(t, n, created, "every appended issue applied")
	require.Zero(t, dead, "no dead events")
	require.Zero(t, twice, "no event applied twice")
	require.Zero(t, unticked, "every applied event marked by a tick that committed")
	require.Zero(t, stale, "nothing left waiting")

	var duplicatedAudit, countMismatch, violations int
	require.NoError(t, pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM (SELECT bead_id FROM bead_events WHERE event_type = 'created' GROUP BY town_id, bead_id HAVING count(*) > 1) d),
		(SELECT count(*) FROM towns t WHERE t.tick_count <> (SELECT count(*) FROM reconciler_ticks k WHERE k.town_id = t.town_id)),
		(SELECT count(*) FROM invariant_violations WHERE invariant IN (5, 6, 7))`).Scan(&duplicatedAudit, &countMismatch, &violations))
	require.Zero(t, duplicatedAudit, "no bead created twice")
	require.Zero(t, countMismatch, "each town's tick count equals its tick rows")
	require.Zero(t, violations, "no invariant of the reconciler's own state broken")
	var ticks int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks`).Scan(&ticks))
	t.Logf("3 worker processes, %d towns: %d issues appended and applied once, %d ticks", townCount, n, ticks)
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
