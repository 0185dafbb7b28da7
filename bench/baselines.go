package bench

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"gastown/db"
	"gastown/jobs"
)

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+)`)

// pgbenchTPS runs `pgbench -N` (the simple-update script: one small write transaction)
// on a fresh database of pgbench's own tables.
func pgbenchTPS(ctx context.Context, url string, clients int, d time.Duration) (float64, error) {
	path, err := pgbenchPath()
	if err != nil {
		return 0, err
	}
	if err := db.RecreateDatabase(ctx, url); err != nil {
		return 0, err
	}
	if out, err := exec.CommandContext(ctx, path, "-i", "-q", "-s", "10", url).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pgbench -i: %w: %s", err, out)
	}
	return runPgbench(ctx, path, url, clients, d, "-N")
}

func pgbenchPath() (string, error) {
	path, err := exec.LookPath("pgbench")
	if err != nil {
		return "", errors.New("pgbench is not installed (Debian: apt-get install postgresql-contrib or postgresql-15); rerun with --baselines=false to skip it")
	}
	return path, nil
}

// runPgbench runs pgbench for d with clients clients over prepared statements and
// returns its transactions (script executions) per second.
func runPgbench(ctx context.Context, path, url string, clients int, d time.Duration, args ...string) (float64, error) {
	secs := max(1, int(d.Seconds()))
	args = append([]string{"-n", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", "2", "-T", strconv.Itoa(secs)}, args...)
	out, err := exec.CommandContext(ctx, path, append(args, url)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench %s: %w: %s", strings.Join(args, " "), err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps: %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

//go:embed tickfloor.sql
var tickFloorScript []byte

// tickFloorTPS measures the tick floor: pgbench running tickfloor.sql — the rows a tick of
// one event writes, and nothing else — on a fresh database with gastown's schema and
// towns small towns (SeedTown: ten beads, two agents each), with clients clients. It is
// what the schema itself lets a tick cost; ticks/s over it is what the code around the
// rows (reads, rules, round trips, River's own statements) leaves of it.
func tickFloorTPS(ctx context.Context, url string, clients, towns int, d time.Duration, logger *slog.Logger) (float64, error) {
	path, err := pgbenchPath()
	if err != nil {
		return 0, err
	}
	if err := db.RecreateDatabase(ctx, url); err != nil {
		return 0, err
	}
	pool, err := db.Connect(ctx, url, 4)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if err := db.Migrate(ctx, pool, logger); err != nil {
		return 0, err
	}
	for range towns {
		if _, err := SeedTown(ctx, pool, 10, 2); err != nil {
			return 0, err
		}
	}
	// Each town's open issue and first agent are the rows its ticks change.
	if _, err := pool.Exec(ctx, `
CREATE TABLE bench_floor_towns AS
SELECT row_number() OVER (ORDER BY t.town_id) AS n, t.town_id, b.bead_id, a.agent_id
FROM towns t
CROSS JOIN LATERAL (SELECT bead_id FROM beads WHERE town_id = t.town_id AND type = 'issue' AND status = 'open' LIMIT 1) b
CROSS JOIN LATERAL (SELECT agent_id FROM agents WHERE town_id = t.town_id ORDER BY agent_id LIMIT 1) a;
CREATE UNIQUE INDEX ON bench_floor_towns (n);
ANALYZE`); err != nil {
		return 0, fmt.Errorf("tick floor towns: %w", err)
	}
	script, err := os.CreateTemp("", "gastown-tickfloor-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(script.Name()) //nolint:errcheck
	if _, err := script.Write(tickFloorScript); err != nil {
		return 0, err
	}
	if err := script.Close(); err != nil {
		return 0, err
	}
	return runPgbench(ctx, path, url, clients, d, "-f", script.Name(), "-D", "towns="+strconv.Itoa(towns))
}

// noopArgs is the job of the River baseline.
type noopArgs struct{}

func (noopArgs) Kind() string { return "bench_noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	done chan<- struct{}
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	w.done <- struct{}{}
	return nil
}

// riverNoopJobsPerSec measures River on the same server with the client settings the
// tick queue uses (workers, fetch cooldown and poll interval, River's pool with commits
// that do not wait for their flush): n no-op jobs are inserted,
// then worked, and the rate of completion is returned.
func riverNoopJobsPerSec(ctx context.Context, url string, workers int, cooldown, poll time.Duration, d time.Duration) (float64, error) {
	if err := db.RecreateDatabase(ctx, url); err != nil {
		return 0, err
	}
	pool, err := db.Connect(ctx, url, int32(workers+8))
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return 0, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, fmt.Errorf("migrate River: %w", err)
	}
	// River works the jobs on a pool made like the workers' (jobs.NewRiverPool).
	riverPool, err := jobs.NewRiverPool(ctx, pool)
	if err != nil {
		return 0, err
	}
	defer riverPool.Close()
	done := make(chan struct{}, 1024)
	w := river.NewWorkers()
	river.AddWorker(w, &noopWorker{done: done})
	client, err := river.NewClient(riverpgxv5.New(riverPool), &river.Config{
		Logger:            slog.New(slog.DiscardHandler),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           w,
		FetchCooldown:     cooldown,
		FetchPollInterval: poll,
	})
	if err != nil {
		return 0, err
	}
	// Enough jobs that the queue never runs dry within d at 20k jobs/s.
	n := max(2000, int(d.Seconds()*20000))
	for inserted := 0; inserted < n; {
		batch := min(5000, n-inserted)
		params := make([]river.InsertManyParams, batch)
		for i := range params {
			params[i] = river.InsertManyParams{Args: noopArgs{}}
		}
		if _, err := client.InsertManyFast(ctx, params); err != nil {
			return 0, fmt.Errorf("insert no-op jobs: %w", err)
		}
		inserted += batch
	}
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()
	// Skip the first second (the client starting), then count for d.
	warm := time.After(time.Second)
	for {
		select {
		case <-done:
			continue
		case <-warm:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		break
	}
	start := time.Now()
	deadline := time.After(d)
	count := 0
	for {
		select {
		case <-done:
			count++
		case <-deadline:
			return float64(count) / time.Since(start).Seconds(), nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
