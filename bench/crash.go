package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"gastown/db"
	"gastown/jobs"
)

// worker is a gastown worker process (`gastown serve --no-api`) on the bench database.
type worker struct {
	cmd *exec.Cmd
	id  string // its River client id: host-pid, as serve names it
}

func (e *env) spawnWorker(ctx context.Context) (*worker, error) {
	if e.opts.Executable == "" {
		return nil, errors.New("the crash workload runs worker processes: Options.Executable must name the gastown binary")
	}
	cmd := exec.CommandContext(ctx, e.opts.Executable, "serve", "--no-api", "--database-url", e.url,
		"--tick-workers", strconv.Itoa(e.opts.TickWorkers), "--side-effect-workers", strconv.Itoa(e.opts.SideEffectWorkers),
		"--log-level", "error", "--max-conns", strconv.Itoa(e.opts.TickWorkers+e.opts.SideEffectWorkers+8))
	cmd.Env = append(os.Environ(), "GASTOWN_AGENT_TOKEN_SECRET=bench-agent-token-secret", "SENTRY_DSN=")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker process: %w", err)
	}
	host, _ := os.Hostname()
	return &worker{cmd: cmd, id: host + "-" + strconv.Itoa(cmd.Process.Pid)}, nil
}

func (w *worker) stop() {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = w.cmd.Process.Kill()
		<-done
	}
}

// runCrash: two worker processes tick the towns while events arrive; one is killed with
// SIGKILL mid-run (the River leader, the worst case: the sweep moves with leadership).
// The killed worker's towns must tick again within 10 s, and every event must be applied
// exactly once.
func runCrash(ctx context.Context, opts Options, rep *Report) error {
	n := opts.townsFor(200, 4)
	rep.Towns = n
	e, err := newEnv(ctx, opts, jobs.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	towns, rigs, err := e.seedTowns(ctx, n)
	if err != nil {
		return err
	}
	a, err := e.spawnWorker(ctx)
	if err != nil {
		return err
	}
	defer a.stop()
	b, err := e.spawnWorker(ctx)
	if err != nil {
		return err
	}
	defer b.stop()
	if err := e.settle(ctx, time.Minute); err != nil {
		return err
	}
	rate := opts.Rate
	if rate <= 0 {
		rate = float64(opts.scaled(100, 10))
	}
	next := func(i int64) (string, db.NewEvent) {
		k := int(i % int64(n))
		if i%4 == 0 {
			return towns[k], issueEvent(rigs[k], i) // some life cycles: side effects in flight at the kill
		}
		return towns[k], deliveryEvent()
	}
	d := e.drive(ctx, rate, 0, next)
	p := newProgress(opts.Progress, "crash", opts.Duration)
	time.Sleep(opts.Duration / 2)
	p.update(opts.Duration/2, "killing a worker")

	// Kill the leader if it is one of ours (the worst case), else worker a.
	victim := a
	var leader string
	if err := e.pool.QueryRow(ctx, `SELECT leader_id FROM river_leader LIMIT 1`).Scan(&leader); err == nil && leader == b.id {
		victim = b
	}
	// Kill it in the middle of a tick: wait (up to 10 s) until it runs one.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var running bool
		if err := e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job WHERE kind = 'tick_town' AND state = 'running'
AND attempted_by[array_length(attempted_by, 1)] = $1)`, victim.id).Scan(&running); err == nil && running {
			break
		}
	}
	killedAt := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill worker: %w", err)
	}
	_ = victim.cmd.Wait()
	// The ticks that died with it: its tick jobs still running after the kill.
	var orphaned []string
	rows, err := e.pool.Query(ctx, `SELECT DISTINCT args ->> 'town_id' FROM river_job
WHERE kind = 'tick_town' AND state = 'running' AND attempted_by[array_length(attempted_by, 1)] = $1`, victim.id)
	if err != nil {
		return fmt.Errorf("find the ticks that died: %w", err)
	}
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			orphaned = append(orphaned, id)
		}
	}
	rows.Close()
	time.Sleep(opts.Duration / 2)
	d.stop()
	p.done()
	if err := e.settle(ctx, 2*time.Minute); err != nil {
		return fmt.Errorf("after the kill: %w", err)
	}

	// Recovery: how long after the kill each town whose tick died with the worker, and
	// every town's events appended after the kill, waited for a committed tick.
	var recovery float64
	err = e.pool.QueryRow(ctx, `
SELECT coalesce(max(extract(epoch FROM first_tick - $2::timestamptz)), 0) FROM (
  SELECT min(k.started_at + k.wall_clock_us * interval '1 microsecond') AS first_tick
  FROM reconciler_ticks k WHERE k.town_id::text = ANY($1) AND k.started_at > $2 GROUP BY k.town_id) t`, orphaned, killedAt).Scan(&recovery)
	if err != nil {
		return fmt.Errorf("measure recovery: %w", err)
	}
	var afterKillMax float64
	err = e.pool.QueryRow(ctx, `
SELECT coalesce(max(extract(epoch FROM (k.started_at + k.wall_clock_us * interval '1 microsecond') - ev.created_at)), 0)
FROM town_events ev JOIN reconciler_ticks k ON k.town_id = ev.town_id AND k.tick_id = ev.processed_tick_id
WHERE ev.created_at BETWEEN $1 AND $1 + interval '2 seconds'`, killedAt).Scan(&afterKillMax)
	if err != nil {
		return fmt.Errorf("measure latency after the kill: %w", err)
	}
	// Exactly once: every appended event is processed, none dead, none twice; every
	// side-effect job reported at most one outcome (the idempotency key makes two
	// impossible; counted anyway).
	// An event still pending counts as lost only when it has waited longer than the 10 s
	// rescue bound: the simulated agents keep reporting after the settle above, and a
	// report appended a moment ago is on its way, not lost.
	var pending, dead, processed, twice int
	err = e.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'pending' AND created_at < now() - interval '10 seconds'), count(*) FILTER (WHERE state = 'dead'),
       count(*) FILTER (WHERE state = 'processed' AND attempts = 1), count(*) FILTER (WHERE attempts > 1) FROM town_events`).Scan(&pending, &dead, &processed, &twice)
	if err != nil {
		return err
	}
	var doubled int
	err = e.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT idempotency_key FROM town_events WHERE idempotency_key IS NOT NULL
GROUP BY town_id, idempotency_key HAVING count(*) > 1) d`).Scan(&doubled)
	if err != nil {
		return err
	}
	sent := int(d.sent.Load()) + n // the driver's events and the rigs
	rep.DurationS = opts.Duration.Seconds()
	rep.CrashOrphanedTowns = len(orphaned)
	rep.CrashRecoveryS = recovery
	rep.CrashLatencyAfterKillS = afterKillMax
	rep.Notes = append(rep.Notes, fmt.Sprintf("killed worker %s (%s) with SIGKILL after %s; %d of its ticks were in flight; %d events appended, %d processed once, %d pending, %d dead, %d applied twice, %d outcomes doubled",
		victim.id, map[bool]string{true: "the leader", false: "not the leader"}[victim.id == leader], opts.Duration/2, len(orphaned), sent, processed, pending, dead, twice, doubled))
	rep.target("killed worker's towns tick again (s)", recovery, "≤ 10", recovery <= 10)
	rep.target("latency of events appended just after the kill (s)", afterKillMax, "≤ 10", afterKillMax <= 10)
	bad := pending + dead + twice + doubled
	rep.target("events lost, dead or applied twice; outcomes doubled", float64(bad), "0", bad == 0 && processed >= sent)
	return nil
}
