// Package bench is gastown's benchmark harness: it creates a database of its own, sets up
// a workload, runs the workers in-process against it, drives events, and reports what the
// fleet achieved next to baselines measured on the same server in the same run
// (`pgbench -N` and River working no-op jobs).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gastown/agentrt"
	"gastown/db"
	"gastown/jobs"
	"gastown/reconciler"
)

// Workloads lists the workloads by name.
var Workloads = []string{"active", "burst", "crash", "hot", "idle", "large"}

// Options configure one run.
type Options struct {
	// DatabaseURL names the server (and credentials) to use. The harness creates and drops
	// its own databases there (gastown_bench, gastown_bench_pgbench, gastown_bench_river, gastown_bench_floor);
	// the database named in the URL is never touched.
	DatabaseURL string
	Workload    string
	Duration    time.Duration
	// Towns overrides the workload's number of towns (0: its default).
	Towns int
	// Rate overrides the event rate of the latency phase, in events/s (0: active runs
	// the fleet at half the ticks/s of the capacity measured in the same run).
	Rate float64
	// TickWorkers, SideEffectWorkers and FetchCooldown are the River settings of the
	// workers and of the River baseline.
	TickWorkers       int
	SideEffectWorkers int
	FetchCooldown     time.Duration
	// DrainBatch is the most events a tick drains (0: the workers' default, 500).
	DrainBatch int
	// FetchPollInterval is River's fallback poll (default 1 s, the workers' default).
	FetchPollInterval time.Duration
	// Baselines runs pgbench -N and the River no-op baseline (BaselineDuration each), and
	// for active the tick floor too.
	Baselines        bool
	BaselineDuration time.Duration
	// Scale multiplies the workload's sizes (towns, events, beads; default 1). Tests run
	// the workloads small.
	Scale float64
	// DatabasePrefix names the harness's databases (default "gastown_bench").
	DatabasePrefix string
	// Progress, when set, receives a progress line (a bar on a terminal).
	Progress io.Writer
	Logger   *slog.Logger
	// Executable is the gastown binary the crash workload runs as worker processes.
	Executable string
	// CPUProfile, when set, is where a Go CPU profile of the workload's first measurement
	// window goes (active: the capacity phase; hot: the normal towns alone), for
	// `go tool pprof`.
	CPUProfile string
}

func (o *Options) defaults() error {
	if !slices.Contains(Workloads, o.Workload) {
		return fmt.Errorf("unknown workload %q: choose one of %s", o.Workload, strings.Join(Workloads, ", "))
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.TickWorkers <= 0 {
		o.TickWorkers = 8
	}
	if o.SideEffectWorkers <= 0 {
		o.SideEffectWorkers = 32
	}
	if o.FetchCooldown <= 0 {
		o.FetchCooldown = jobs.DefaultFetchCooldown
	}
	if o.FetchPollInterval <= 0 {
		o.FetchPollInterval = time.Second
	}
	if o.BaselineDuration <= 0 {
		o.BaselineDuration = 10 * time.Second
	}
	if o.Scale <= 0 {
		o.Scale = 1
	}
	if o.DatabasePrefix == "" {
		o.DatabasePrefix = "gastown_bench"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return nil
}

// Report is what a run measured. Rates are per second over the measurement window.
type Report struct {
	Workload            string  `json:"workload"`
	DurationS           float64 `json:"duration_s"`
	Towns               int     `json:"towns"`
	TicksPerSec         float64 `json:"ticks_per_sec"`
	EventsPerSec        float64 `json:"events_per_sec"`
	LatencyP50ms        float64 `json:"latency_p50_ms"`
	LatencyP99ms        float64 `json:"latency_p99_ms"`
	PgbenchTPS          float64 `json:"pgbench_tps"`
	RiverNoopJobsPerSec float64 `json:"river_noop_jobs_per_sec"`
	RatioToPgbench      float64 `json:"ratio_to_pgbench"`
	RatioToRiverNoop    float64 `json:"ratio_to_river_noop"`
	// TickFloorTPS is the tick floor (active's baselines): pgbench running the rows a tick
	// of one event writes, and nothing else, on gastown's schema (bench/tickfloor.sql).
	TickFloorTPS     float64 `json:"tick_floor_tps,omitempty"`
	RatioToTickFloor float64 `json:"ratio_to_tick_floor,omitempty"`
	// LatencyQueued is the part of the latency before the tick that applied the event
	// held its town (waiting for River to fetch the tick, or for an earlier tick);
	// LatencyTick the duration of the ticks that applied them, from holding the town to
	// commit. Both from the window of latency_p50_ms.
	LatencyQueued *Quantiles `json:"latency_queued,omitempty"`
	LatencyTick   *Quantiles `json:"latency_tick,omitempty"`
	// LatencyRate is the event rate of the latency phase (events/s); LatencyTicksPerSec
	// the ticks/s it caused, LatencyLoad those as a share of the capacity's ticks/s
	// (active: 0.5 unless --rate chose the rate).
	LatencyRate        float64 `json:"latency_rate_events_per_sec,omitempty"`
	LatencyTicksPerSec float64 `json:"latency_ticks_per_sec,omitempty"`
	LatencyLoad        float64 `json:"latency_load,omitempty"`
	// Phases splits tick duration: drain, snapshot, reconcile, apply, commit, total.
	Phases map[string]Quantiles `json:"tick_phases,omitempty"`
	// QueueDepth samples the waiting tick jobs once a second.
	QueueDepth []int `json:"tick_queue_depth,omitempty"`
	// PostgresTPS is the server's commits+rollbacks per second on the bench database;
	// TxPerTick divides it by the ticks.
	PostgresTPS float64 `json:"postgres_xact_per_sec"`
	// StatementsPerSec counts the statements the server ran for gastown (the harness's own
	// left out), when it loads pg_stat_statements; 0 otherwise.
	StatementsPerSec float64 `json:"postgres_statements_per_sec,omitempty"`
	// RoundTripsPerTick: the round trips of the whole workload (workers and the driver's
	// appends; a pipelined batch is one) divided by the ticks.
	RoundTripsPerTick float64 `json:"round_trips_per_tick,omitempty"`
	TxPerTick         float64 `json:"postgres_xact_per_tick,omitempty"`
	CPUGastownPct     float64 `json:"cpu_gastown_pct_of_core"`
	CPUPostgresPct    float64 `json:"cpu_postgres_pct_of_core"`
	// CPUStealPct is CPU the hypervisor took from the machine (a VM's noise), % of a core.
	CPUStealPct float64 `json:"cpu_steal_pct_of_core"`
	// BytesPerTickRow is what a reconciler_ticks row costs in steady state (heap bytes in
	// use plus indexes, per row); BytesPerTickRowOnDisk divides everything on disk,
	// fixed overhead and pages extended ahead included (see tickRowBytes).
	BytesPerTickRow       float64 `json:"bytes_per_tick_row,omitempty"`
	BytesPerTickRowOnDisk float64 `json:"bytes_per_tick_row_on_disk,omitempty"`
	// TickRowCostPct is what writing reconciler_ticks costs in ticks/s (active): capacity
	// slices alternate with and without the row; 100 × (1 − with ÷ without).
	TickRowCostPct        float64 `json:"tick_row_cost_pct,omitempty"`
	TicksPerSecWithRow    float64 `json:"ticks_per_sec_with_row,omitempty"`
	TicksPerSecWithoutRow float64 `json:"ticks_per_sec_without_row,omitempty"`
	// TownsHOTPct is the share of towns-table updates that were HOT.
	TownsHOTPct float64 `json:"towns_hot_update_pct"`
	// Burst: events of the burst, the ticks that applied them, and the bound
	// ceil(N / drain batch) + 2.
	BurstEvents int `json:"burst_events,omitempty"`
	BurstTicks  int `json:"burst_ticks,omitempty"`
	BurstBound  int `json:"burst_ticks_bound,omitempty"`
	// Hot: the normal towns' latency p99 with the hot town and without it, and its queued
	// part (event commit → the applying tick holds the town).
	OtherTownsP99            float64 `json:"other_towns_latency_p99_ms,omitempty"`
	OtherTownsP99Alone       float64 `json:"other_towns_latency_p99_alone_ms,omitempty"`
	OtherTownsQueuedP99      float64 `json:"other_towns_queued_p99_ms,omitempty"`
	OtherTownsQueuedP99Alone float64 `json:"other_towns_queued_p99_alone_ms,omitempty"`
	HotTownEventsPerSec      float64 `json:"hot_town_events_per_sec,omitempty"`
	// Crash: ticks in flight on the killed worker, how long until their towns ticked
	// again, and the longest wait of an event appended just after the kill.
	CrashOrphanedTowns     int     `json:"crash_ticks_in_flight,omitempty"`
	CrashRecoveryS         float64 `json:"crash_recovery_s,omitempty"`
	CrashLatencyAfterKillS float64 `json:"crash_latency_after_kill_s,omitempty"`
	// Large: snapshot load and reconcile per town size.
	Sizes []SizePoint `json:"sizes,omitempty"`
	// Targets are the targets with what this run measured.
	Targets []Target `json:"targets"`
	// Statements are pg_stat_statements' top statements over the run, when the server
	// loads the extension.
	Statements []Statement `json:"top_statements,omitempty"`
	Notes      []string    `json:"notes,omitempty"`
	// IdleMostOverdueS is how long past its due time the most overdue idle town waited
	// (sampled each second of the measurement).
	IdleMostOverdueS float64 `json:"idle_most_overdue_s,omitempty"`
}

// SizePoint is the cost of one town size.
type SizePoint struct {
	Beads       int     `json:"beads"`
	Agents      int     `json:"agents"`
	SnapshotP50 float64 `json:"snapshot_p50_ms"`
	// ReconcileP50 is timed right after the snapshot's load, ReconcileAloneP50 with no
	// GC cycle running: a collection between the load and the reconcile, the sizes taking
	// turns (reconcileAlone; runLarge's growth target).
	ReconcileP50      float64 `json:"reconcile_p50_ms"`
	ReconcileAloneP50 float64 `json:"reconcile_alone_p50_ms"`
	InvariantsP50     float64 `json:"invariants_p50_ms"`
}

// Target is one target and whether this run met it.
type Target struct {
	Name     string  `json:"name"`
	Measured float64 `json:"measured"`
	Goal     string  `json:"goal"`
	Met      bool    `json:"met"`
}

// env is one run's database and workers.
type env struct {
	opts  Options
	url   string
	pool  *pgxpool.Pool
	store *db.Store
	svc   *jobs.Service
	sim   *agentrt.Simulator
	col   *collector
	// riverPool is River's own pool (jobs.NewRiverPool), as a worker process's.
	riverPool *pgxpool.Pool
	// trips counts the pool's round trips (workers, the driver's appends, the harness's
	// own reads).
	trips *roundTrips
	// statements: pg_stat_statements is available.
	statements bool
	// omitRow makes ticks skip their reconciler_ticks row (the row-cost comparison).
	omitRow atomic.Bool
	// profiled: the CPU profile (Options.CPUProfile) was taken.
	profiled bool
}

// startCPUProfile starts a Go CPU profile into path; the returned func stops and closes it.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// withDatabase returns the server URL with another database name.
func withDatabase(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("the benchmark needs DATABASE_URL as a postgres:// URL (it creates databases of its own on that server)")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// Run runs one workload and its baselines and returns the report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	rep := &Report{Workload: opts.Workload}
	if opts.Baselines {
		if err := runBaselines(ctx, opts, rep); err != nil {
			return nil, err
		}
	}
	var err error
	switch opts.Workload {
	case "active":
		err = runActive(ctx, opts, rep)
	case "burst":
		err = runBurst(ctx, opts, rep)
	case "crash":
		err = runCrash(ctx, opts, rep)
	case "hot":
		err = runHot(ctx, opts, rep)
	case "idle":
		err = runIdle(ctx, opts, rep)
	case "large":
		err = runLarge(ctx, opts, rep)
	}
	if err != nil {
		return nil, err
	}
	if rep.PgbenchTPS > 0 {
		rep.RatioToPgbench = rep.TicksPerSec / rep.PgbenchTPS
	}
	if rep.RiverNoopJobsPerSec > 0 {
		rep.RatioToRiverNoop = rep.TicksPerSec / rep.RiverNoopJobsPerSec
	}
	if rep.TickFloorTPS > 0 {
		rep.RatioToTickFloor = rep.TicksPerSec / rep.TickFloorTPS
	}
	return rep, nil
}

func runBaselines(ctx context.Context, opts Options, rep *Report) error {
	pgURL, err := withDatabase(opts.DatabaseURL, opts.DatabasePrefix+"_pgbench")
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Progress, "baseline: pgbench -N, %d clients, %s\n", opts.TickWorkers, opts.BaselineDuration)
	if rep.PgbenchTPS, err = pgbenchTPS(ctx, pgURL, opts.TickWorkers, opts.BaselineDuration); err != nil {
		return err
	}
	riverURL, err := withDatabase(opts.DatabaseURL, opts.DatabasePrefix+"_river")
	if err != nil {
		return err
	}
	fmt.Fprintf(opts.Progress, "baseline: River no-op jobs, %d workers, fetch cooldown %s, %s\n", opts.TickWorkers, opts.FetchCooldown, opts.BaselineDuration)
	if rep.RiverNoopJobsPerSec, err = riverNoopJobsPerSec(ctx, riverURL, opts.TickWorkers, opts.FetchCooldown, opts.FetchPollInterval, opts.BaselineDuration); err != nil {
		return err
	}
	if opts.Workload != "active" {
		return nil
	}
	floorURL, err := withDatabase(opts.DatabaseURL, opts.DatabasePrefix+"_floor")
	if err != nil {
		return err
	}
	towns := opts.townsFor(1000, 2)
	fmt.Fprintf(opts.Progress, "baseline: the tick floor (bench/tickfloor.sql), %d towns, %d clients, %s\n", towns, opts.TickWorkers, opts.BaselineDuration)
	rep.TickFloorTPS, err = tickFloorTPS(ctx, floorURL, opts.TickWorkers, towns, opts.BaselineDuration, opts.Logger)
	return err
}

// latencySplit is the window's latency split into queued and ticking (nil: no latency).
func (w windowResult) latencySplit() (queued, tick *Quantiles) {
	if w.latency.N == 0 {
		return nil, nil
	}
	t := w.phases["total"]
	return &w.queued, &t
}

// newEnv creates the bench database and starts the workers.
func newEnv(ctx context.Context, opts Options, cfg jobs.Config) (*env, error) {
	u, err := withDatabase(opts.DatabaseURL, opts.DatabasePrefix)
	if err != nil {
		return nil, err
	}
	if err := db.RecreateDatabase(ctx, u); err != nil {
		return nil, err
	}
	trips := &roundTrips{}
	pool, err := db.ConnectTraced(ctx, u, int32(opts.TickWorkers+opts.SideEffectWorkers+24), trips)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, pool, opts.Logger); err != nil {
		pool.Close()
		return nil, err
	}
	e := &env{opts: opts, url: u, pool: pool, store: db.NewStore(pool), col: newCollector(), trips: trips}
	e.statements = resetStatements(ctx, pool)
	cfg.TickWorkers, cfg.SideEffectWorkers = opts.TickWorkers, opts.SideEffectWorkers
	cfg.FetchCooldown, cfg.FetchPollInterval = opts.FetchCooldown, opts.FetchPollInterval
	if opts.DrainBatch > 0 {
		cfg.DrainBatch = opts.DrainBatch
	}
	cfg.WorkerID = "bench"
	e.sim = agentrt.NewSimulator(agentrt.SimConfig{HeartbeatInterval: 30 * time.Second, WorkMin: 100 * time.Millisecond, WorkMax: 300 * time.Millisecond, Seed: 1},
		reporter{e}, opts.Logger)
	if e.riverPool, err = jobs.NewRiverPool(ctx, pool); err != nil {
		e.close()
		return nil, err
	}
	e.svc, err = jobs.New(jobs.Deps{Store: e.store, RiverPool: e.riverPool, Runtime: e.sim, Logger: opts.Logger,
		OnTick: e.col.onTick, OnAppend: e.col.onAppend, OmitTickRow: e.omitRow.Load}, cfg, true)
	if err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) start(ctx context.Context) error { return e.svc.Start(ctx) }

func (e *env) close() {
	if e.svc != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_ = e.svc.Stop(stopCtx)
		cancel()
	}
	if e.sim != nil {
		e.sim.Close()
	}
	if e.riverPool != nil {
		e.riverPool.Close()
	}
	e.pool.Close()
}

// reporter hands the simulated agents' reports to the service's front door.
type reporter struct{ e *env }

func (r reporter) Heartbeat(ctx context.Context, townID, agentID string, a agentrt.Activity) error {
	return r.e.svc.Events.Heartbeat(ctx, townID, agentID, a)
}

func (r reporter) Done(ctx context.Context, townID, agentID string, p reconciler.AgentDonePayload) error {
	return r.e.svc.Events.Done(ctx, townID, agentID, p)
}

func (r reporter) Completed(ctx context.Context, townID, agentID string, p reconciler.AgentCompletedPayload) error {
	return r.e.svc.Events.Completed(ctx, townID, agentID, p)
}

// pendingEvents counts events not yet applied.
func (e *env) pendingEvents(ctx context.Context) (int, error) {
	var n int
	err := e.pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE state = 'pending'`).Scan(&n)
	return n, err
}

// settle waits until no event is pending (or the timeout passes).
func (e *env) settle(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := e.pendingEvents(ctx)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d events still pending after %s", n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// window measures the system over d: the collector's ticks plus the server's counters,
// the CPU and the queue depth. The driver runs meanwhile.
type windowResult struct {
	seconds                  float64
	ticks, events            int
	latency, queued          Quantiles
	phases                   map[string]Quantiles
	perTown                  map[string]*townStats
	pgTPS                    float64
	cpuSelf, cpuPG, cpuSteal float64
	hotPct                   float64
	hasHot                   bool
	queue                    []int
	statements               []Statement
	// statementsPerSec: pg_stat_statements' calls per second (0: not available).
	statementsPerSec float64
	roundTrips       int64
}

func (e *env) measure(ctx context.Context, d time.Duration, label string) (windowResult, error) {
	var w windowResult
	var reset time.Time
	if e.statements {
		resetStatements(ctx, e.pool)
		reset = time.Now()
	}
	pg0, err := samplePG(ctx, e.pool)
	if err != nil {
		return w, err
	}
	stopProfile := func() {}
	if e.opts.CPUProfile != "" && !e.profiled {
		e.profiled = true
		stop, err := startCPUProfile(e.opts.CPUProfile)
		if err != nil {
			return w, err
		}
		var once sync.Once
		stopProfile = func() { once.Do(stop) }
		defer stopProfile()
	}
	cpu0 := sampleCPU()
	trips0 := e.trips.n.Load()
	start := time.Now()
	e.col.start(start)
	p := newProgress(e.opts.Progress, label, d)
	sec := time.NewTicker(time.Second)
	defer sec.Stop()
	end := time.After(d)
loop:
	for {
		select {
		case <-ctx.Done():
			return w, ctx.Err()
		case <-end:
			break loop
		case <-sec.C:
			waiting, _, err := queueDepth(ctx, e.pool)
			if err == nil {
				w.queue = append(w.queue, waiting)
			}
			e.col.mu.Lock()
			ticks := e.col.ticks
			e.col.mu.Unlock()
			p.update(time.Since(start), fmt.Sprintf("%.0f ticks/s, queue %d", float64(ticks)/time.Since(start).Seconds(), waiting))
		}
	}
	stop := time.Now()
	w.roundTrips = e.trips.n.Load() - trips0
	stopProfile()
	e.col.stop(stop)
	cpu1 := sampleCPU()
	p.done()
	time.Sleep(1100 * time.Millisecond) // backends flush their statistics at most once a second
	pg1, err := samplePG(ctx, e.pool)
	if err != nil {
		return w, err
	}
	w.seconds = stop.Sub(start).Seconds()
	e.col.mu.Lock()
	w.ticks, w.events = e.col.ticks, e.col.events
	w.latency, w.queued = quantiles(e.col.latencies), quantiles(e.col.queued)
	w.phases = map[string]Quantiles{}
	for k, v := range e.col.phases {
		w.phases[k] = quantiles(v)
	}
	w.perTown = e.col.perTown
	e.col.mu.Unlock()
	w.pgTPS = float64(pg1.xacts-pg0.xacts) / pg1.at.Sub(pg0.at).Seconds()
	w.cpuSelf, w.cpuPG, w.cpuSteal = cpuShares(cpu0, cpu1)
	if e.statements {
		w.statements, _ = topStatements(ctx, e.pool, 12)
		if n, err := statementsRun(ctx, e.pool); err == nil {
			w.statementsPerSec = float64(n) / time.Since(reset).Seconds()
		}
	}
	if upd := pg1.townUpd - pg0.townUpd; upd > 0 {
		w.hasHot = true
		w.hotPct = 100 * float64(pg1.hotUp-pg0.hotUp) / float64(upd)
	}
	return w, nil
}

// fill copies a window's figures into the report.
func (w windowResult) fill(rep *Report) {
	rep.DurationS = w.seconds
	rep.TicksPerSec = float64(w.ticks) / w.seconds
	rep.EventsPerSec = float64(w.events) / w.seconds
	rep.LatencyP50ms, rep.LatencyP99ms = w.latency.P50, w.latency.P99
	rep.LatencyQueued, rep.LatencyTick = w.latencySplit()
	rep.Phases = w.phases
	rep.QueueDepth = w.queue
	rep.PostgresTPS = w.pgTPS
	rep.StatementsPerSec = w.statementsPerSec
	if w.ticks > 0 {
		rep.TxPerTick = w.pgTPS * w.seconds / float64(w.ticks)
		rep.RoundTripsPerTick = float64(w.roundTrips) / float64(w.ticks)
	}
	rep.CPUGastownPct, rep.CPUPostgresPct, rep.CPUStealPct = w.cpuSelf, w.cpuPG, w.cpuSteal
	rep.Statements = w.statements
	if w.hasHot {
		rep.TownsHOTPct = w.hotPct
	}
}

func (rep *Report) target(name string, measured float64, goal string, met bool) {
	rep.Targets = append(rep.Targets, Target{Name: name, Measured: measured, Goal: goal, Met: met})
}

// scaled is n times the run's scale, at least min.
func (o Options) scaled(n, least int) int {
	return max(least, int(float64(n)*o.Scale))
}

// townsFor is the run's number of towns: --towns, or the workload's default at scale.
func (o Options) townsFor(def, least int) int {
	if o.Towns > 0 {
		return o.Towns
	}
	return o.scaled(def, least)
}
