package jobs

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// TestWorkersSurviveKilledConnections terminates every backend of the workers' database
// (pg_terminate_backend) every 400 ms (8 rounds; GASTOWN_KILL_ROUNDS) while events stream into ten towns: ticks die
// mid-flight with their connections, appends fail and are retried by the sender. Then the
// server refuses connections to the database for 2 s (ALLOW_CONNECTIONS false, every
// backend terminated), and takes them again. The workers reconnect and catch up: appends
// commit again after the outage, and every event whose append committed is applied
// exactly once (by a tick that committed), none goes dead, none is applied twice.
func TestWorkersSurviveKilledConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, testOpts{workers: true, cfg: Config{ActiveInterval: 100 * time.Millisecond, SweepInterval: 200 * time.Millisecond}})
	var towns []string
	for range 10 {
		town, _ := b.newTown(t)
		towns = append(towns, town)
	}
	dbName := b.store.Pool.Config().ConnConfig.Database
	killer, err := pgx.Connect(ctx, dbtest.ServerURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = killer.Close(ctx) })

	var (
		mu          sync.Mutex
		committed   = map[string]string{} // event id → town
		failures    int
		afterOutage int // appends committed after the outage
		outageOver  bool
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				town := towns[rng.IntN(len(towns))]
				out, err := b.svc.Events.Append(ctx, town, db.NewEvent{Type: reconciler.EventNudgeDelivered,
					Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}})
				mu.Lock()
				if err != nil {
					if failures == 0 {
						t.Logf("first append failure: %v", err)
					}
					failures++ // the connection died under the append: it did not commit, or did
				} else {
					committed[out[0].ID] = town
					if outageOver {
						afterOutage++
					}
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	terminate := func() int {
		var n int
		require.NoError(t, killer.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = $1 AND pid <> pg_backend_pid()`, dbName).Scan(&n))
		return n
	}
	kills, rounds := 0, fromEnv(t, "GASTOWN_KILL_ROUNDS", 8, strconv.Atoi) // make test/chaos: 40
	for range rounds {
		time.Sleep(400 * time.Millisecond)
		kills += terminate()
	}
	// An outage: the server refuses new connections to the database and drops the open ones.
	t.Cleanup(func() { _, _ = killer.Exec(context.Background(), `ALTER DATABASE "`+dbName+`" ALLOW_CONNECTIONS true`) })
	_, err = killer.Exec(ctx, `ALTER DATABASE "`+dbName+`" ALLOW_CONNECTIONS false`)
	require.NoError(t, err)
	kills += terminate()
	mu.Lock()
	failedBefore := failures
	mu.Unlock()
	time.Sleep(2 * time.Second)
	mu.Lock()
	refused := failures - failedBefore
	mu.Unlock()
	_, err = killer.Exec(ctx, `ALTER DATABASE "`+dbName+`" ALLOW_CONNECTIONS true`)
	require.NoError(t, err)
	mu.Lock()
	outageOver = true
	mu.Unlock()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	require.Positive(t, kills)

	eventually(t, 60*time.Second, func() bool {
		var pending int
		err := b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE state = 'pending'`).Scan(&pending)
		return err == nil && pending == 0
	}, "every event applied after the connections came back")

	mu.Lock()
	defer mu.Unlock()
	require.Greater(t, len(committed), 100)
	require.Positive(t, refused, "appends were refused during the outage")
	require.Positive(t, afterOutage, "appends commit again after the outage")
	rows, err := b.store.Pool.Query(ctx, `SELECT e.event_id::text, e.town_id::text, e.state, e.attempts,
		EXISTS (SELECT 1 FROM reconciler_ticks k WHERE k.town_id = e.town_id AND k.tick_id = e.processed_tick_id)
		FROM town_events e WHERE e.event_type = 'nudge_delivered'`)
	require.NoError(t, err)
	seen := 0
	for rows.Next() {
		var id, town, state string
		var attempts int
		var byCommittedTick bool
		require.NoError(t, rows.Scan(&id, &town, &state, &attempts, &byCommittedTick))
		require.Equal(t, "processed", state, "event %s", id)
		require.Equal(t, 1, attempts, "event %s applied once", id)
		require.True(t, byCommittedTick, "event %s marked by a tick that committed", id)
		if want, ok := committed[id]; ok {
			require.Equal(t, want, town)
			seen++
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(committed), seen, "every committed append is there")
	t.Logf("%d backends killed in %d rounds and an outage of 2 s (%d appends refused during it, %d committed in the second after it); %d appends committed, %d failed with their connection; all applied once",
		kills, rounds, refused, afterOutage, len(committed), failures)
}
