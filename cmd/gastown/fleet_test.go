package main

import (
	"bytes"
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/jobs"
	"gastown/reconciler"
)

// fleet is a test database with towns, an in-process front door that appends events
// (an API process without workers), and `gastown serve --no-api` worker processes.
type fleet struct {
	t     *testing.T
	exe   string
	url   string
	pool  *pgxpool.Pool
	front *jobs.Service
	towns []string
	rigs  []string

	mu     sync.Mutex
	issues map[string]string // bead id → town, of every issue whose append committed
}

// newFleet builds the binary (with the chaos failpoint when chaos is set: inert unless
// GASTOWN_CHAOS_KILL_AT is in a process's environment) and creates towns, each with a rig.
func newFleet(t *testing.T, towns int, chaos bool) *fleet {
	t.Helper()
	ctx := context.Background()
	exe := filepath.Join(t.TempDir(), "gastown")
	args := []string{"build", "-o", exe}
	if chaos {
		args = append(args, "-tags", "chaos")
	}
	out, err := exec.Command("go", append(args, "gastown/cmd/gastown")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	url := dbtest.NewURL(t)
	pool, err := db.Connect(ctx, url, 16)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := db.NewStore(pool)
	front, err := jobs.New(jobs.Deps{Store: store, Logger: slog.New(slog.DiscardHandler)}, jobs.Config{}, false)
	require.NoError(t, err)
	f := &fleet{t: t, exe: exe, url: url, pool: pool, front: front, issues: map[string]string{}}
	for i := range towns {
		town, rig := townWithRig(t, store, front, fmt.Sprint("f", i))
		f.towns, f.rigs = append(f.towns, town), append(f.rigs, rig)
	}
	return f
}

// townWithRig creates a town and appends the creation of one rig (applied by its next tick).
func townWithRig(t *testing.T, store *db.Store, svc *jobs.Service, name string) (town, rig string) {
	t.Helper()
	ctx := context.Background()
	created, err := store.CreateTown(ctx, db.NewID(), name, reconciler.TownConfig{}, time.Now())
	require.NoError(t, err)
	rig = db.NewID()
	_, err = svc.Events.Append(ctx, created.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rig, Name: "r"}})
	require.NoError(t, err)
	return created.ID, rig
}

// tickOnce runs one tick of the town and commits it.
func tickOnce(t *testing.T, store *db.Store, svc *jobs.Service, town string) {
	t.Helper()
	ctx := context.Background()
	tx, err := store.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = svc.Ticker.Tick(ctx, tx, town, jobs.TickOptions{})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
}

// process is one worker process; its stderr is kept for the failure message.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve starts `gastown serve --no-api` with the given extra flags and environment.
func (f *fleet) serve(env []string, flags ...string) *process {
	f.t.Helper()
	args := append([]string{"serve", "--no-api", "--database-url", f.url, "--log-level", "error"}, flags...)
	cmd := exec.Command(f.exe, args...)
	cmd.Env = append(append(os.Environ(), "GASTOWN_AGENT_TOKEN_SECRET=fleet-test-agent-secret", "SENTRY_DSN=", "GASTOWN_CHAOS_KILL_AT="), env...)
	p := &process{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	require.NoError(f.t, cmd.Start())
	go func() { _ = cmd.Wait(); close(p.done) }()
	f.t.Cleanup(p.stop)
	return p
}

// stop ends the process with SIGTERM (SIGKILL after 20 s) and waits for it.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stream appends new issues to random towns from `writers` goroutines, one every pause
// each, until stop closes; it returns when they have stopped.
func (f *fleet) stream(stop <-chan struct{}, writers int, pause time.Duration) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
				k := rng.IntN(len(f.towns))
				ev := db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(),
					Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: "fleet issue", RigID: f.rigs[k], CreatedBy: "test"}}
				if _, err := f.front.Events.Append(context.Background(), f.towns[k], ev); err == nil {
					f.mu.Lock()
					f.issues[ev.BeadID] = f.towns[k]
					f.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
}

// duplicateTicks inserts tick jobs for random towns straight into River's table, past the
// jobs' uniqueness, one every pause until stop closes: extra ticks of a town racing the
// queued one, as a misfired recovery or a lost unique key would make them. Only the town
// lock keeps them apart.
func (f *fleet) duplicateTicks(stop <-chan struct{}, pause time.Duration) {
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for {
		select {
		case <-stop:
			return
		case <-time.After(pause):
		}
		town := f.towns[rng.IntN(len(f.towns))]
		_, _ = f.pool.Exec(context.Background(), `INSERT INTO river_job (args, kind, queue, max_attempts, state)
			SELECT jsonb_build_object('town_id', $1::text), 'tick_town', 'ticks', 100, 'available' FROM generate_series(1, 3)`, town)
	}
}

// waitApplied waits until no issue waits to be applied and no event has waited more than
// 2 s: on a loaded machine the fleet may still be working off a backlog of tick jobs
// when the stream stops, and the side effects of the last issues keep appending their
// outcomes meanwhile. An event whose wake-up was lost waits until within runs out.
func (f *fleet) waitApplied(within time.Duration) {
	f.t.Helper()
	waitFor(f.t, within, func() bool {
		var issues, old int
		err := f.pool.QueryRow(context.Background(), `SELECT
			count(*) FILTER (WHERE event_type = 'bead_created'),
			count(*) FILTER (WHERE created_at < now() - interval '2 seconds')
			FROM town_events WHERE state = 'pending'`).Scan(&issues, &old)
		return err == nil && issues == 0 && old == 0
	})
}

// checkExactlyOnce asserts what any run of the fleet must leave, and returns the number of
// issues and ticks:
//   - every appended issue applied, by a tick that committed (its row exists), once: no
//     event tried twice, none dead, none left waiting, one "created" audit row per bead
//     (a tick overlapping another of the same town would re-apply its events);
//   - no two ticks of a town overlapped: in tick-id order (ids are taken under the town's
//     lock) each tick started after the previous one ended, each town's tick count equals
//     its tick rows (events are not checked against their seq order: a sequence number is
//     taken before the append commits, so concurrent appends may commit out of it);
//   - no invariant of the reconciler's own state broken.
func (f *fleet) checkExactlyOnce() (issues, ticks int) {
	t := f.t
	t.Helper()
	ctx := context.Background()
	var created, dead, twice, unticked, stale int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM town_events WHERE event_type = 'bead_created' AND state = 'processed'),
		(SELECT count(*) FROM town_events WHERE state = 'dead'),
		(SELECT count(*) FROM town_events WHERE attempts > 1),
		(SELECT count(*) FROM town_events e WHERE e.state = 'processed'
		   AND NOT EXISTS (SELECT 1 FROM reconciler_ticks k WHERE k.town_id = e.town_id AND k.tick_id = e.processed_tick_id)),
		(SELECT count(*) FROM town_events WHERE state = 'pending' AND created_at < now() - interval '10 seconds')`).
		Scan(&created, &dead, &twice, &unticked, &stale))
	f.mu.Lock()
	issues = len(f.issues)
	f.mu.Unlock()
	require.Positive(t, issues)
	require.Equal(t, issues, created, "every appended issue applied")
	require.Zero(t, dead, "no dead events")
	require.Zero(t, twice, "no event applied twice")
	require.Zero(t, unticked, "every applied event marked by a tick that committed")
	if stale > 0 {
		// What the waiting events are, and what their towns' tick jobs and ticks did.
		var detail string
		require.NoError(t, f.pool.QueryRow(ctx, `SELECT string_agg(format('event %s %s town %s attempts %s created %s; jobs %s; last tick %s',
		    e.seq, e.event_type, e.town_id, e.attempts, e.created_at,
		    (SELECT string_agg(format('%s %s created %s scheduled %s attempt %s at %s fin %s %s', j.id, j.state, j.created_at, j.scheduled_at, j.attempt, j.attempted_at, j.finalized_at, j.errors), ' | ' ORDER BY j.id)
		       FROM river_job j WHERE j.kind = 'tick_town' AND j.args ->> 'town_id' = e.town_id::text),
		    (SELECT max(k.started_at) FROM reconciler_ticks k WHERE k.town_id = e.town_id)), E'\n')
		  FROM town_events e WHERE e.state = 'pending' AND e.created_at < now() - interval '10 seconds'`).Scan(&detail))
		t.Errorf("%d events left waiting over 10 s:\n%s", stale, detail)
	}

	var duplicatedAudit, countMismatch, overlapping, violations int
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM (SELECT bead_id FROM bead_events WHERE event_type = 'created' GROUP BY town_id, bead_id HAVING count(*) > 1) d),
		(SELECT count(*) FROM towns t WHERE t.tick_count <> (SELECT count(*) FROM reconciler_ticks k WHERE k.town_id = t.town_id)),
		(SELECT count(*) FROM (
		   SELECT started_at, lag(started_at + wall_clock_us * interval '1 microsecond') OVER w AS previous_end
		   FROM reconciler_ticks WINDOW w AS (PARTITION BY town_id ORDER BY tick_id)) k
		 WHERE started_at < previous_end),
		(SELECT count(*) FROM invariant_violations WHERE invariant IN (5, 6, 7))`).
		Scan(&duplicatedAudit, &countMismatch, &overlapping, &violations))
	require.Zero(t, duplicatedAudit, "no bead created twice")
	require.Zero(t, countMismatch, "each town's tick count equals its tick rows")
	require.Zero(t, overlapping, "no tick of a town started before the previous one ended: %s", f.overlaps())
	require.Zero(t, violations, "no invariant of the reconciler's own state broken")
	require.NoError(t, f.pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks`).Scan(&ticks))
	return issues, ticks
}

// overlaps describes the overlapping ticks.
func (f *fleet) overlaps() string {
	rows, err := f.pool.Query(context.Background(), `SELECT town_id, previous_id, tick_id, previous_start, previous_wall, started_at, wall_clock_us FROM (
		SELECT town_id, tick_id, started_at, wall_clock_us, lag(tick_id) OVER w AS previous_id, lag(started_at) OVER w AS previous_start,
		       lag(wall_clock_us) OVER w AS previous_wall
		FROM reconciler_ticks WINDOW w AS (PARTITION BY town_id ORDER BY tick_id)) k
		WHERE started_at < previous_start + previous_wall * interval '1 microsecond' LIMIT 5`)
	if err != nil {
		return err.Error()
	}
	var out bytes.Buffer
	for rows.Next() {
		var town string
		var prevID, id int64
		var prevStart, start time.Time
		var prevWall, wall int
		if err := rows.Scan(&town, &prevID, &id, &prevStart, &prevWall, &start, &wall); err != nil {
			return err.Error()
		}
		fmt.Fprintf(&out, "\ntown %s: tick %d %s + %dµs, tick %d %s + %dµs (%s before the first ended)", town, prevID, prevStart.Format(time.StampMicro), prevWall,
			id, start.Format(time.StampMicro), wall, prevStart.Add(time.Duration(prevWall)*time.Microsecond).Sub(start))
	}
	return out.String()
}

// fromEnv parses the environment variable name (heavier runs of a test), or returns def
// when it is unset; a value that does not parse fails the test.
func fromEnv[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := parse(s)
	require.NoError(t, err, name)
	return v
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
