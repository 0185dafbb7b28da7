package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gastown/db"
	"gastown/jobs"
	"gastown/reconciler"
)

// seedTowns creates n towns with one rig each through the front door (rig_created events)
// and returns their ids and rigs.
func (e *env) seedTowns(ctx context.Context, n int) (towns, rigs []string, err error) {
	towns, rigs = make([]string, n), make([]string, n)
	now := time.Now()
	for i := range n {
		t, err := e.store.CreateTown(ctx, db.NewID(), fmt.Sprintf("bench-%d", i), reconciler.TownConfig{}, now)
		if err != nil {
			return nil, nil, err
		}
		towns[i], rigs[i] = t.ID, db.NewID()
		if _, err := e.svc.Events.Append(ctx, t.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{
			RigID: rigs[i], Name: "repo", GitURL: "https://github.com/bench/repo", DefaultBranch: "main"}}); err != nil {
			return nil, nil, err
		}
	}
	return towns, rigs, nil
}

// startSeeded starts the in-process workers, seeds n towns and waits until their first
// events are applied.
func (e *env) startSeeded(ctx context.Context, n int) (towns, rigs []string, err error) {
	if err := e.start(ctx); err != nil {
		return nil, nil, err
	}
	if towns, rigs, err = e.seedTowns(ctx, n); err != nil {
		return nil, nil, err
	}
	return towns, rigs, e.settle(ctx, time.Minute)
}

// driver appends events at a steady rate from several goroutines until stopped.
type driver struct {
	sent   atomic.Int64
	failed atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// drive starts appending events at rate per second; next picks the town and the event.
// With maxPending > 0 the driver holds back while more events than that wait to be
// applied: it keeps the fleet saturated without a backlog that takes minutes to drain.
func (e *env) drive(ctx context.Context, rate float64, maxPending int, next func(i int64) (string, db.NewEvent)) *driver {
	d := &driver{}
	ctx, d.cancel = context.WithCancel(ctx)
	var pending atomic.Int64
	if maxPending > 0 {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if n, err := e.pendingEvents(ctx); err == nil {
					pending.Store(int64(n))
				}
			}
		}()
	}
	// Enough goroutines that a slow append does not hold the rate back, few enough that
	// each still sends within a fraction of a second at low rates.
	goroutines := max(1, min(16, int(rate/20)))
	interval := time.Duration(float64(time.Second) * float64(goroutines) / rate)
	var seq atomic.Int64
	for g := range goroutines {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			time.Sleep(interval * time.Duration(g) / time.Duration(goroutines)) // spread the goroutines
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if maxPending > 0 && pending.Load() > int64(maxPending) {
					continue
				}
				town, ev := next(seq.Add(1))
				if _, err := e.svc.Events.Append(ctx, town, ev); err != nil {
					if ctx.Err() == nil {
						d.failed.Add(1)
					}
					continue
				}
				d.sent.Add(1)
			}
		}()
	}
	return d
}

func (d *driver) stop() {
	d.cancel()
	d.wg.Wait()
}

// issueEvent is a new issue in a rig: the whole life cycle follows (dispatch, simulated
// work, review by the refinery, merge).
func issueEvent(rig string, i int64) db.NewEvent {
	return db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(), Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadIssue, Title: fmt.Sprintf("bench issue %d", i), RigID: rig, CreatedBy: "bench"}}
}

// deliveryEvent is the cheapest real fact: a side-effect job reporting a delivered nudge.
func deliveryEvent() db.NewEvent {
	return db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
}

// halfCapacityRate is the event rate at which the fleet runs half the ticks/s of the
// capacity phase. Half that phase's events/s would not do: there up to 200 events wait
// and a tick applies several at once, while at a lower rate most events get a tick of
// their own, so half the events/s kept the fleet at ~97% of its tick capacity (2026-11-29:
// 199 ticks/s against 204). The rate starts at half the capacity in ticks (an event makes
// at most about one tick) and is scaled by the ticks/s it causes over a few seconds.
func (e *env) halfCapacityRate(ctx context.Context, rep *Report, eventsPerIssue float64, next func(i int64) (string, db.NewEvent)) (float64, error) {
	target := rep.TicksPerSec / 2
	return calibrateRate(target, target, rep.EventsPerSec, 2, func(rate float64) (float64, error) {
		d := e.drive(ctx, rate/eventsPerIssue, 0, next)
		defer d.stop()
		var t0 int64
		var from time.Time
		for _, wait := range []time.Duration{time.Second, 3 * time.Second} { // warm-up, then the count
			t0, from = e.col.all.Load(), time.Now()
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(wait):
			}
		}
		return float64(e.col.all.Load()-t0) / time.Since(from).Seconds(), nil
	})
}

// calibrateRate scales an event rate, from start, until ticksAt(rate) — the ticks/s it
// causes — is near target: each of rounds trials multiplies the rate by target over the
// ticks/s measured. The rate stays at most ceiling (the capacity's events/s).
func calibrateRate(target, start, ceiling float64, rounds int, ticksAt func(rate float64) (float64, error)) (float64, error) {
	rate := min(start, ceiling)
	for range rounds {
		ticks, err := ticksAt(rate)
		if err != nil {
			return 0, err
		}
		if ticks <= 0 {
			break
		}
		rate = min(rate*target/ticks, ceiling)
	}
	return rate, nil
}

// runActive: many small towns, each event starting or advancing an issue's life cycle.
// Phase one drives more than the fleet can take and measures its capacity; phase two
// drives half of it and measures the event-to-applied latency.
func runActive(ctx context.Context, opts Options, rep *Report) error {
	n := opts.townsFor(1000, 2)
	rep.Towns = n
	e, err := newEnv(ctx, opts, jobs.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	towns, rigs, err := e.startSeeded(ctx, n)
	if err != nil {
		return err
	}
	next := func(i int64) (string, db.NewEvent) {
		k := int(i % int64(n))
		return towns[k], issueEvent(rigs[k], i)
	}
	half := opts.Duration / 2
	highRate := float64(opts.scaled(1500, 20))
	if v := os.Getenv("GASTOWN_BENCH_HIGH_RATE"); v != "" { // experiments
		highRate, _ = strconv.ParseFloat(v, 64)
	}
	// Capacity: new issues at a rate the fleet cannot follow (each brings ~7 events).
	high := e.drive(ctx, highRate, min(2*n, 200), next)
	time.Sleep(2 * time.Second) // warm-up
	s0 := high.sent.Load()
	capacity, err := e.measure(ctx, half, "capacity")
	s1 := high.sent.Load()
	high.stop()
	if err != nil {
		return err
	}
	capacity.fill(rep)
	if err := e.settle(ctx, 2*time.Minute); err != nil {
		return err
	}
	eventsPerIssue := 7.0
	if issues := s1 - s0; issues > 0 && capacity.events > 0 {
		eventsPerIssue = max(1, float64(capacity.events)/float64(issues))
	}
	// Latency at half capacity: at half the ticks/s the fleet sustained (see halfCapacityRate).
	rate := opts.Rate
	if rate <= 0 {
		if rate, err = e.halfCapacityRate(ctx, rep, eventsPerIssue, next); err != nil {
			return err
		}
	}
	rep.LatencyRate = rate
	low := e.drive(ctx, rate/eventsPerIssue, 0, next)
	time.Sleep(2 * time.Second)
	lat, err := e.measure(ctx, half, "latency")
	low.stop()
	if err != nil {
		return err
	}
	rep.LatencyP50ms, rep.LatencyP99ms = lat.latency.P50, lat.latency.P99
	rep.LatencyQueued, rep.LatencyTick = lat.latencySplit()
	if lat.seconds > 0 && rep.TicksPerSec > 0 {
		rep.LatencyTicksPerSec = float64(lat.ticks) / lat.seconds
		rep.LatencyLoad = rep.LatencyTicksPerSec / rep.TicksPerSec
	}
	if err := e.settle(ctx, 2*time.Minute); err != nil {
		return err
	}
	if err := e.tickRowCost(ctx, towns[:min(len(towns), opts.TickWorkers)], opts.Duration/3, rep); err != nil {
		return err
	}
	if rep.BytesPerTickRow, rep.BytesPerTickRowOnDisk, err = tickRowBytes(ctx, e.pool); err != nil {
		return err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("capacity phase: %d towns, new issues at up to %.0f/s while fewer than min(2 per town, 200) events wait (~%.1f events each); latency phase: %.0f events/s",
		n, highRate, eventsPerIssue, rate))
	if rep.PgbenchTPS > 0 {
		rep.target("active ticks/s ≥ 0.5 × pgbench -N", rep.TicksPerSec/rep.PgbenchTPS, "≥ 0.5", rep.TicksPerSec >= 0.5*rep.PgbenchTPS)
	}
	rep.target("latency p50 at half capacity (ms)", rep.LatencyP50ms, "≤ 10", rep.LatencyP50ms <= 10)
	rep.target("latency p99 at half capacity (ms)", rep.LatencyP99ms, "≤ 50", rep.LatencyP99ms <= 50)
	rep.target("bytes per reconciler_ticks row", rep.BytesPerTickRow, "≤ 200", rep.BytesPerTickRow <= 200)
	if rep.TicksPerSecWithoutRow > 0 {
		rep.target("reconciler_ticks cost (% of ticks/s)", rep.TickRowCostPct, "≤ 5", rep.TickRowCostPct <= 5)
	}
	rep.target("towns updates HOT (%)", rep.TownsHOTPct, "≥ 95", rep.TownsHOTPct >= 95)
	return nil
}

// runBurst: 10,000 events committed at once to one town; they must coalesce into at most
// ceil(N / drain batch) + 2 ticks.
func runBurst(ctx context.Context, opts Options, rep *Report) error {
	events := opts.scaled(10000, 10)
	rep.Towns = 1
	cfg := jobs.Config{}
	e, err := newEnv(ctx, opts, cfg)
	if err != nil {
		return err
	}
	defer e.close()
	towns, _, err := e.startSeeded(ctx, 1)
	if err != nil {
		return err
	}
	evs := make([]db.NewEvent, events)
	for i := range evs {
		evs[i] = deliveryEvent()
	}
	start := time.Now()
	e.col.start(start)
	if _, err := e.svc.Events.Append(ctx, towns[0], evs...); err != nil {
		return err
	}
	committed := time.Now()
	if err := e.settle(ctx, 5*time.Minute); err != nil {
		return err
	}
	e.col.stop(time.Now())
	e.col.mu.Lock()
	ts := e.col.perTown[towns[0]]
	ticks := 0
	if ts != nil {
		ticks = ts.ticks
		rep.LatencyP50ms, rep.LatencyP99ms = quantiles(ts.latencies).P50, quantiles(ts.latencies).P99
	}
	phases := map[string]Quantiles{}
	for k, v := range e.col.phases {
		phases[k] = quantiles(v)
	}
	e.col.mu.Unlock()
	elapsed := time.Since(committed)
	rep.Phases = phases
	rep.BurstEvents, rep.BurstTicks = events, ticks
	batch := jobs.DefaultDrainBatch
	if opts.DrainBatch > 0 {
		batch = opts.DrainBatch
	}
	rep.BurstBound = int(math.Ceil(float64(events)/float64(batch))) + 2
	rep.DurationS = elapsed.Seconds()
	rep.EventsPerSec = float64(events) / elapsed.Seconds()
	rep.TicksPerSec = float64(ticks) / elapsed.Seconds()
	rep.Notes = append(rep.Notes, fmt.Sprintf("append of %d events took %s; applied %s after its commit", events, committed.Sub(start).Round(time.Millisecond), elapsed.Round(time.Millisecond)))
	rep.target("burst ticks", float64(ticks), fmt.Sprintf("≤ %d", rep.BurstBound), ticks <= rep.BurstBound)
	return nil
}

// runHot: one town sends nine tenths of the events among many normal towns; the normal
// towns' latency must stay close to its value without the hot town.
func runHot(ctx context.Context, opts Options, rep *Report) error {
	n := opts.townsFor(200, 2)
	rep.Towns = n + 1
	e, err := newEnv(ctx, opts, jobs.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	towns, _, err := e.startSeeded(ctx, n+1)
	if err != nil {
		return err
	}
	hot, normal := towns[0], towns[1:]
	rate := opts.Rate
	if rate <= 0 {
		rate = float64(opts.scaled(100, 10)) // below the fleet's capacity here: the comparison is about the hot town
	}
	normalNext := func(i int64) (string, db.NewEvent) { return normal[int(i%int64(len(normal)))], deliveryEvent() }
	third := opts.Duration / 3
	alone := e.drive(ctx, rate, 0, normalNext)
	time.Sleep(time.Second)
	w0, err := e.measure(ctx, third, "alone")
	alone.stop()
	if err != nil {
		return err
	}
	// others is the normal towns' latency and its queued part.
	others := func(w windowResult) (latency, queued Quantiles) {
		var all, q []time.Duration
		for id, ts := range w.perTown {
			if id != hot {
				all, q = append(all, ts.latencies...), append(q, ts.queued...)
			}
		}
		return quantiles(all), quantiles(q)
	}
	alone0, queued0 := others(w0)
	rep.OtherTownsP99Alone, rep.OtherTownsQueuedP99Alone = alone0.P99, queued0.P99
	// The hot town offers at least nine times the normal towns' rate and at least 10,000
	// events/s (more than the fleet's capacity here), in appends of 50 events (a busy
	// tenant's API calls and callbacks).
	hotRate := max(rate*9, float64(opts.scaled(10000, 100)))
	bg := e.drive(ctx, rate, 0, normalNext)
	hotBatch := &driver{}
	hotCtx, cancel := context.WithCancel(ctx)
	hotBatch.cancel = cancel
	hotBatch.wg.Add(1)
	go func() {
		defer hotBatch.wg.Done()
		interval := time.Duration(float64(time.Second) * 50 / hotRate)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-hotCtx.Done():
				return
			case <-t.C:
			}
			evs := make([]db.NewEvent, 50)
			for i := range evs {
				evs[i] = deliveryEvent()
			}
			if _, err := e.svc.Events.Append(hotCtx, hot, evs...); err == nil {
				hotBatch.sent.Add(50)
			}
		}
	}()
	time.Sleep(time.Second)
	w1, err := e.measure(ctx, 2*third, "with hot")
	bg.stop()
	hotBatch.stop()
	if err != nil {
		return err
	}
	w1.fill(rep)
	with1, queued1 := others(w1)
	rep.OtherTownsP99, rep.OtherTownsQueuedP99 = with1.P99, queued1.P99
	if ts := w1.perTown[hot]; ts != nil {
		rep.HotTownEventsPerSec = float64(ts.events) / w1.seconds
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("%d normal towns at %.0f events/s in total; the hot town offered %.0f events/s (%.0f%% of all) in appends of 50",
		n, rate, hotRate, 100*hotRate/(hotRate+rate)))
	rep.target("other towns' p99 with hot / without", rep.OtherTownsP99/math.Max(rep.OtherTownsP99Alone, 0.001), "≤ 2", rep.OtherTownsP99 <= 2*rep.OtherTownsP99Alone)
	rep.target("hot town events/s", rep.HotTownEventsPerSec, "≥ 5000", rep.HotTownEventsPerSec >= 5000)
	return nil
}

// runIdle: many registered towns with nothing to do; their idle cadence must cost little.
func runIdle(ctx context.Context, opts Options, rep *Report) error {
	n := opts.townsFor(100000, 10)
	rep.Towns = n
	e, err := newEnv(ctx, opts, jobs.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	// Registered towns, due over the next idle interval as if they had ticked before.
	if _, err := e.pool.Exec(ctx, `
INSERT INTO towns (town_id, name, created_at, updated_at, next_tick_at, last_tick_at)
SELECT gen_random_uuid(), 'idle-' || i, now(), now(), now() + random() * interval '5 minutes', now() - interval '1 minute'
FROM generate_series(1, $1) i`, n); err != nil {
		return fmt.Errorf("seed idle towns: %w", err)
	}
	if _, err := e.pool.Exec(ctx, `ANALYZE towns`); err != nil {
		return err
	}
	if err := e.start(ctx); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	// The cadence is kept when no town waits long past its due time: sample the most
	// overdue town every second of the measurement.
	overdue := make(chan float64, 1)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		worst := 0.0
		defer func() { overdue <- worst }()
		for t := time.NewTicker(time.Second); ; {
			select {
			case <-sampleCtx.Done():
				t.Stop()
				return
			case <-t.C:
				var s float64
				if err := e.pool.QueryRow(sampleCtx, `/* bench */ SELECT coalesce(extract(epoch FROM now() - min(next_tick_at)), 0)::float8 FROM towns WHERE next_tick_at < now()`).Scan(&s); err == nil {
					worst = math.Max(worst, s)
				}
			}
		}
	}()
	from := time.Now()
	w, err := e.measure(ctx, opts.Duration, "idle")
	stopSampling()
	rep.IdleMostOverdueS = <-overdue
	if err != nil {
		return err
	}
	w.fill(rep)
	// Quiet ticks come in batches (every 5 s a batch takes the towns due since the last):
	// a window's tick count moves by up to a batch. The rate the cadence keeps is the
	// towns of the batches after the first divided by the time from the first to the last.
	if rate, err := batchedTickRate(ctx, e.pool, from, time.Now()); err == nil && rate > 0 {
		rep.TicksPerSec = rate
	}
	due := float64(n) / reconciler.IdleTickInterval.Seconds()
	rep.Notes = append(rep.Notes, fmt.Sprintf("%d towns on a %s cadence: %.0f ticks/s are due; ticks/s is counted from the first to the last quiet batch of the window", n, reconciler.IdleTickInterval, due))
	rep.target("idle ticks/s kept (measured / due)", rep.TicksPerSec/due, "≥ 0.95", rep.TicksPerSec >= 0.95*due)
	rep.target("idle: most overdue town (s)", rep.IdleMostOverdueS, "≤ 10", rep.IdleMostOverdueS <= 10)
	// Queries per second when pg_stat_statements counts them; else transactions, which a
	// statement outside a transaction is too (a pipelined batch is several statements in one).
	if rep.StatementsPerSec > 0 {
		rep.target("idle Postgres statements/s", rep.StatementsPerSec, "≤ 20", rep.StatementsPerSec <= 20)
	} else {
		rep.target("idle Postgres transactions/s", rep.PostgresTPS, "≤ 20", rep.PostgresTPS <= 20)
	}
	rep.target("idle gastown CPU (% of a core)", rep.CPUGastownPct, "< 5", rep.CPUGastownPct < 5)
	return nil
}

// batchedTickRate is the tick rate of quiet batches between from and to: a batch's ticks
// share their clock (started_at); the towns ticked by every batch after the first, over
// the time from the first batch to the last. 0 with fewer than two batches.
func batchedTickRate(ctx context.Context, pool *pgxpool.Pool, from, to time.Time) (float64, error) {
	rows, err := pool.Query(ctx, `/* bench */ SELECT started_at, count(*) FROM reconciler_ticks
WHERE started_at BETWEEN $1 AND $2 GROUP BY started_at HAVING count(*) > 1 ORDER BY started_at`, from, to)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var (
		first, last time.Time
		ticks, n    int64
	)
	for rows.Next() {
		var at time.Time
		var c int64
		if err := rows.Scan(&at, &c); err != nil {
			return 0, err
		}
		if n == 0 {
			first = at
		} else {
			ticks += c
		}
		last = at
		n++
	}
	if err := rows.Err(); err != nil || n < 2 {
		return 0, err
	}
	return float64(ticks) / last.Sub(first).Seconds(), nil
}

// runLarge: one town of 1,000 agents and 10,000 beads, and the same at 1/8, 1/4 and 1/2:
// snapshot load, reconcile and invariants must stay small and grow linearly.
func runLarge(ctx context.Context, opts Options, rep *Report) error {
	e, err := newEnv(ctx, opts, jobs.Config{})
	if err != nil {
		return err
	}
	defer e.close()
	rep.Towns = 4
	var towns []string
	for _, div := range []int{8, 4, 2, 1} {
		beads, agents := opts.scaled(10000/div, 8), opts.scaled(1000/div, 1)
		town, err := SeedTown(ctx, e.pool, beads, agents)
		if err != nil {
			return err
		}
		towns = append(towns, town)
		// As many loads of a small town as of the whole one take time: a small town's
		// reconcile is a fraction of a millisecond, where a scheduler's hiccup is a large
		// share of a sample, and the growth ratios divide by it.
		pt, err := e.measureTown(ctx, town, opts.scaled(30*div, 3))
		if err != nil {
			return err
		}
		pt.Beads, pt.Agents = beads, agents
		rep.Sizes = append(rep.Sizes, pt)
	}
	alone, err := e.reconcileAlone(ctx, towns, opts.scaled(60, 3))
	if err != nil {
		return err
	}
	for i := range rep.Sizes {
		pt := &rep.Sizes[i]
		pt.ReconcileAloneP50 = alone[i]
		fmt.Fprintf(opts.Progress, "large: %5d beads, %4d agents: snapshot %.1f ms, reconcile %.2f ms (alone %.2f), invariants %.2f ms\n",
			pt.Beads, pt.Agents, pt.SnapshotP50, pt.ReconcileP50, pt.ReconcileAloneP50, pt.InvariantsP50)
	}
	big, small := rep.Sizes[len(rep.Sizes)-1], rep.Sizes[0]
	rep.target("large reconcile (ms)", big.ReconcileP50, "≤ 5", big.ReconcileP50 <= 5)
	rep.target("large snapshot load (ms)", big.SnapshotP50, "≤ 25", big.SnapshotP50 <= 25)
	growth := big.SnapshotP50 / math.Max(small.SnapshotP50, 0.001) / 8
	rep.target("snapshot growth 8× size (÷8: 1 is linear)", growth, "≤ 1.5", growth <= 1.5)
	// The reconcile's growth is the rules' own: timed alone (reconcileAlone). Right after
	// a load it is in the table and the JSON too.
	rgrowth := big.ReconcileAloneP50 / math.Max(small.ReconcileAloneP50, 0.001) / 8
	rep.target("reconcile growth 8× size, timed alone (÷8: 1 is linear)", rgrowth, "≤ 1.5", rgrowth <= 1.5)
	return nil
}

// measureTown loads a town's snapshot, reconciles it and checks its invariants n times.
func (e *env) measureTown(ctx context.Context, town string, n int) (SizePoint, error) {
	var snap, rec, inv []time.Duration
	for range n {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			return SizePoint{}, err
		}
		now := time.Now()
		tt, err := e.store.LockTown(ctx, tx, town, now, true, e.opts.Logger)
		if err != nil {
			_ = tx.Rollback(ctx)
			return SizePoint{}, err
		}
		t0 := time.Now()
		s, err := tt.LoadSnapshot(ctx)
		if err != nil {
			_ = tx.Rollback(ctx)
			return SizePoint{}, err
		}
		t1 := time.Now()
		reconciler.Reconcile(s, reconciler.Options{}, now)
		t2 := time.Now()
		reconciler.CheckInvariants(s)
		t3 := time.Now()
		_ = tx.Rollback(ctx)
		snap, rec, inv = append(snap, t1.Sub(t0)), append(rec, t2.Sub(t1)), append(inv, t3.Sub(t2))
	}
	return SizePoint{SnapshotP50: quantiles(snap).P50, ReconcileP50: quantiles(rec).P50, InvariantsP50: quantiles(inv).P50}, nil
}

// reconcileAlone times the reconcile of each town rounds times with no GC cycle running
// and returns the p50s in the towns' order. Each load is followed by a collection, so
// that the reconcile neither pays for a cycle its load started (right after a 10,000-bead
// load one is often still marking) nor runs out of reused memory (with the GC off instead,
// the large town's load took the free spans and its reconcile faulted fresh pages in); the
// collection also leaves every size's data equally out of the cache. The towns take turns
// within each round, so that the machine's speed, which drifts over seconds on a shared
// VM, weighs on every size alike (BENCHMARKS.md, sixteenth round).
func (e *env) reconcileAlone(ctx context.Context, towns []string, rounds int) ([]float64, error) {
	times := make([][]time.Duration, len(towns))
	for range rounds {
		for i, town := range towns {
			d, err := e.reconcileOnce(ctx, town)
			if err != nil {
				return nil, err
			}
			times[i] = append(times[i], d)
		}
	}
	p50s := make([]float64, len(towns))
	for i := range times {
		p50s[i] = quantiles(times[i]).P50
	}
	return p50s, nil
}

// reconcileOnce loads the town, collects, and times its reconcile.
func (e *env) reconcileOnce(ctx context.Context, town string) (time.Duration, error) {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	now := time.Now()
	tt, err := e.store.LockTown(ctx, tx, town, now, true, e.opts.Logger)
	if err != nil {
		return 0, err
	}
	s, err := tt.LoadSnapshot(ctx)
	if err != nil {
		return 0, err
	}
	runtime.GC()
	t := time.Now()
	reconciler.Reconcile(s, reconciler.Options{}, now)
	return time.Since(t), nil
}

// SeedTown writes a synthetic town straight into the tables with set-based SQL (fast): a
// rig per 1,000 beads, issues of which a tenth are open, a tenth in progress with a
// working polecat, a tenth in review with an open MR and the rest closed, and idle
// polecats up to the number of agents. It returns the town's id.
func SeedTown(ctx context.Context, pool *pgxpool.Pool, beads, agents int) (string, error) {
	town := db.NewID()
	rigs := max(1, beads/1000)
	_, err := pool.Exec(ctx, `
WITH t AS (INSERT INTO towns (town_id, name, created_at, updated_at) VALUES ($1, 'large', now(), now()))
INSERT INTO rigs (town_id, rig_id, name, created_at)
SELECT $1, gen_random_uuid(), 'rig-' || r, now() FROM generate_series(1, $2) r`, town, rigs)
	if err != nil {
		return "", fmt.Errorf("seed town: %w", err)
	}
	_, err = pool.Exec(ctx, `
WITH r AS (SELECT rig_id, row_number() OVER (ORDER BY rig_id) - 1 AS k FROM rigs WHERE town_id = $1)
INSERT INTO beads (town_id, bead_id, type, status, title, rig_id, labels, metadata, created_at, updated_at)
SELECT $1, gen_random_uuid(), 'issue',
       CASE i % 10 WHEN 0 THEN 'open' WHEN 1 THEN 'in_progress' WHEN 2 THEN 'in_review' ELSE 'closed' END,
       'issue ' || i, r.rig_id, '["bench"]', '{"k": 1}', now() - interval '1 hour' + i * interval '1 millisecond', now() - interval '1 minute'
FROM generate_series(1, $2) i JOIN r ON r.k = i % $3`, town, beads, rigs)
	if err != nil {
		return "", fmt.Errorf("seed beads: %w", err)
	}
	// A working polecat per in-progress issue (as far as the agents go), then idle ones.
	_, err = pool.Exec(ctx, `
WITH work AS (SELECT bead_id, rig_id, row_number() OVER (ORDER BY bead_id) AS k FROM beads WHERE town_id = $1 AND status = 'in_progress'),
     slots AS (SELECT k, w.bead_id, coalesce(w.rig_id, (SELECT rig_id FROM rigs WHERE town_id = $1 LIMIT 1)) AS rig_id
               FROM generate_series(1, $2) k LEFT JOIN work w USING (k)),
     ab AS (INSERT INTO beads (town_id, bead_id, type, title, rig_id, created_at, updated_at)
            SELECT $1, gen_random_uuid(), 'agent', 'Polecat-' || k, rig_id, now(), now() FROM slots RETURNING bead_id, title)
INSERT INTO agents (town_id, agent_id, role, name, rig_id, identity, status, current_hook_bead_id, last_activity_at, created_at)
SELECT $1, ab.bead_id, 'polecat', ab.title, s.rig_id, ab.title || '@' || $1,
       CASE WHEN s.bead_id IS NULL THEN 'idle' ELSE 'working' END, s.bead_id, now(), now() - interval '1 hour'
FROM ab JOIN slots s ON 'Polecat-' || s.k = ab.title`, town, agents)
	if err != nil {
		return "", fmt.Errorf("seed agents: %w", err)
	}
	_, err = pool.Exec(ctx, `UPDATE beads b SET assignee_agent_bead_id = a.agent_id FROM agents a
WHERE b.town_id = $1 AND a.town_id = $1 AND a.current_hook_bead_id = b.bead_id`, town)
	if err != nil {
		return "", fmt.Errorf("assign beads: %w", err)
	}
	_, err = pool.Exec(ctx, `
WITH src AS (SELECT bead_id, rig_id FROM beads WHERE town_id = $1 AND type = 'issue' AND status = 'in_review'),
     mr AS (INSERT INTO beads (town_id, bead_id, type, status, title, rig_id, labels, metadata, created_at, updated_at)
            SELECT $1, gen_random_uuid(), 'merge_request', 'open', 'Review: ' || src.bead_id, src.rig_id, '["gt:merge-request"]',
                   jsonb_build_object('source_bead_id', src.bead_id), now(), now() FROM src RETURNING bead_id, metadata),
     rev AS (INSERT INTO review_metadata (town_id, bead_id, branch) SELECT $1, bead_id, 'b' FROM mr)
INSERT INTO bead_dependencies (town_id, bead_id, depends_on_bead_id, dependency_type, created_at)
SELECT $1, mr.bead_id, (mr.metadata ->> 'source_bead_id')::uuid, 'tracks', now() FROM mr`, town)
	if err != nil {
		return "", fmt.Errorf("seed merge requests: %w", err)
	}
	return town, nil
}

// tickRowCost measures what the reconciler_ticks row costs in tick throughput. River's
// fetch loop and the issue life cycle make the fleet's ticks/s swing by ±20% from second
// to second, far more than a row can cost, so this measures the tick transaction itself:
// one goroutine per town (as many as tick workers) appends one event with a plain INSERT
// (no tick job, so River stays out of it) and runs and commits a tick of it, as fast as
// it can. Slices of d alternate with and without the row (ABBA, so a drift in either
// direction cancels).
func (e *env) tickRowCost(ctx context.Context, towns []string, d time.Duration, rep *Report) error {
	const slice = 200 * time.Millisecond // short: the machine's own drift averages out
	pairs := max(int(d/(2*slice)), 2)
	var done atomic.Int64
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, len(towns))
	for _, town := range towns {
		go func() { errc <- e.tickLoop(runCtx, town, &done) }()
	}
	select { // warm-up: caches, prepared statements, the first extension of the heap
	case <-ctx.Done():
		return ctx.Err()
	case err := <-errc:
		return err
	case <-time.After(time.Second):
	}
	var ticks [2]int64 // [with, without]
	var spent [2]time.Duration
	defer e.omitRow.Store(false)
	for i := range 2 * pairs {
		without := (i%4 == 1) || (i%4 == 2) // A B B A
		e.omitRow.Store(without)
		c0, t0 := done.Load(), time.Now()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case <-time.After(slice):
		}
		k := 0
		if without {
			k = 1
		}
		ticks[k] += done.Load() - c0
		spent[k] += time.Since(t0)
	}
	stop()
	for range towns {
		if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	with, without := float64(ticks[0])/spent[0].Seconds(), float64(ticks[1])/spent[1].Seconds()
	rep.TicksPerSecWithRow, rep.TicksPerSecWithoutRow = with, without
	if without > 0 {
		rep.TickRowCostPct = 100 * (1 - with/without)
	}
	return nil
}

// tickLoop appends an event to town and ticks it on the tick job's kind of transaction,
// over and over, counting the ticks; a tick that finds the town busy (a River tick of it)
// is simply retried.
func (e *env) tickLoop(ctx context.Context, town string, done *atomic.Int64) error {
	payload := []byte(`{"nudge_id": "00000000-0000-0000-0000-000000000000"}`)
	for ctx.Err() == nil {
		if _, err := e.pool.Exec(ctx, `INSERT INTO town_events (town_id, event_id, event_type, payload, created_at)
			VALUES ($1, gen_random_uuid(), $2, $3, now())`, town, string(reconciler.EventNudgeDelivered), payload); err != nil {
			return err
		}
		// As a tick job's: BEGIN with the lock, COMMIT and the re-check with the last writes.
		tx, err := e.store.BeginPipelined(ctx)
		if err != nil {
			return err
		}
		_, err = e.svc.Ticker.Tick(ctx, tx, town, jobs.TickOptions{Commit: true})
		_ = tx.Rollback(context.WithoutCancel(ctx))
		switch {
		case err == nil:
			done.Add(1)
		case ctx.Err() != nil: // stopped mid-tick: the connection went with the context
		case errors.Is(err, db.ErrTownBusy):
		default:
			return err
		}
	}
	return ctx.Err()
}
