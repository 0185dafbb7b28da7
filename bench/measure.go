package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"gastown/jobs"
)

// collector hears every committed tick of the in-process workers.
type collector struct {
	all         atomic.Int64 // every committed tick, in or out of a window
	mu          sync.Mutex
	from, until time.Time // the measurement window (zero: not measuring)
	ticks       int
	events      int
	latencies   []time.Duration
	// queued: from an event's commit until the tick that applied it held its town.
	queued  []time.Duration
	phases  map[string][]time.Duration
	perTown map[string]*townStats
	// committed is when each event appended through Events.Append committed (by sequence
	// number), until a tick applies it: latency runs from there. Events appended another
	// way count from their created_at, the start of their append's transaction.
	committed map[int64]time.Time
}

type townStats struct {
	ticks     int
	events    int
	latencies []time.Duration
	// queued is each latency's part before the applying tick held the town.
	queued []time.Duration
}

func newCollector() *collector {
	return &collector{phases: map[string][]time.Duration{}, perTown: map[string]*townStats{}, committed: map[int64]time.Time{}}
}

// start opens a measurement window and forgets what came before.
func (c *collector) start(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.from, c.until = now, time.Time{}
	c.ticks, c.events, c.latencies, c.queued = 0, 0, nil, nil
	c.phases = map[string][]time.Duration{}
	c.perTown = map[string]*townStats{}
}

// stop closes the window.
func (c *collector) stop(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.until = now
}

// onAppend notes when appended events committed.
func (c *collector) onAppend(_ string, seqs []int64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, seq := range seqs {
		c.committed[seq] = at
	}
}

func (c *collector) onTick(townID string, res jobs.TickResult) {
	c.all.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Event commit to tick commit (the append's own transaction is not the tick's latency).
	createdAt := slices.Clone(res.Drain.CreatedAt)
	for i, seq := range res.Drain.AppliedSeqs {
		if at, ok := c.committed[seq]; ok {
			createdAt[i] = at
			delete(c.committed, seq)
		}
	}
	if c.from.IsZero() || res.CommittedAt.Before(c.from) || (!c.until.IsZero() && res.CommittedAt.After(c.until)) {
		return
	}
	c.ticks++
	c.events += res.Drain.Applied
	ts := c.perTown[townID]
	if ts == nil {
		ts = &townStats{}
		c.perTown[townID] = ts
	}
	ts.ticks++
	ts.events += res.Drain.Applied
	held := res.CommittedAt.Add(-res.CommitTime - res.WallClock)
	for _, at := range createdAt {
		l := res.CommittedAt.Sub(at)
		c.latencies = append(c.latencies, l)
		ts.latencies = append(ts.latencies, l)
		// The append's clock reading follows its commit: a tick may hold the town first.
		q := max(0, held.Sub(at))
		c.queued = append(c.queued, q)
		ts.queued = append(ts.queued, q)
	}
	c.phases["drain"] = append(c.phases["drain"], res.DrainTime)
	c.phases["snapshot"] = append(c.phases["snapshot"], res.SnapshotTime)
	c.phases["reconcile"] = append(c.phases["reconcile"], res.ReconcileTime)
	c.phases["apply"] = append(c.phases["apply"], res.ApplyTime)
	c.phases["commit"] = append(c.phases["commit"], res.CommitTime)
	c.phases["total"] = append(c.phases["total"], res.WallClock+res.CommitTime)
}

// Quantiles are the median and 99th percentile of a duration, in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	N   int     `json:"n"`
}

func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q * float64(len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return Quantiles{P50: at(0.50), P99: at(0.99), N: len(s)}
}

// cpuSample is the process's and the machine's CPU time at one moment.
type cpuSample struct {
	at          time.Time
	self        time.Duration // this process and its waited-for children
	machineBusy time.Duration // every CPU of the machine, busy
	// machineSteal is time the hypervisor ran something else while the machine wanted a
	// CPU: not used by anything here, so not in machineBusy.
	machineSteal time.Duration
}

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	var ru, rc syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &rc) == nil {
		s.self += time.Duration(rc.Utime.Nano() + rc.Stime.Nano())
	}
	if f, err := os.Open("/proc/stat"); err == nil {
		sc := bufio.NewScanner(f)
		if sc.Scan() {
			// cpu user nice system idle iowait irq softirq steal guest guest_nice; guest
			// time is already in user and nice.
			fields := strings.Fields(sc.Text())
			var busy, steal int64
			for i, f := range fields[1:] {
				v, _ := strconv.ParseInt(f, 10, 64)
				switch i {
				case 0, 1, 2, 5, 6: // user, nice, system, irq, softirq
					busy += v
				case 7:
					steal = v
				}
			}
			s.machineBusy = time.Duration(busy) * (time.Second / 100) // USER_HZ
			s.machineSteal = time.Duration(steal) * (time.Second / 100)
		}
		_ = f.Close()
	}
	return s
}

// cpuShares returns the CPU used between two samples, as a percentage of one core, by
// this process and by the rest of the machine (Postgres, on a machine that runs only the
// two).
// steal is the share of a core the hypervisor took from the machine meanwhile.
func cpuShares(a, b cpuSample) (self, rest, steal float64) {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0, 0, 0
	}
	mine := (b.self - a.self).Seconds()
	other := (b.machineBusy - a.machineBusy).Seconds() - mine
	stolen := (b.machineSteal - a.machineSteal).Seconds()
	return 100 * mine / wall, max(0, 100*other/wall), 100 * stolen / wall
}

// pgSample is the server's transaction counter and the towns table's update counters.
type pgSample struct {
	at             time.Time
	xacts          int64
	townUpd, hotUp int64
}

func samplePG(ctx context.Context, pool *pgxpool.Pool) (pgSample, error) {
	s := pgSample{at: time.Now()}
	err := pool.QueryRow(ctx, `/* bench */ SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&s.xacts)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_database: %w", err)
	}
	err = pool.QueryRow(ctx, `/* bench */ SELECT coalesce(n_tup_upd, 0), coalesce(n_tup_hot_upd, 0) FROM pg_stat_user_tables WHERE relname = 'towns'`).Scan(&s.townUpd, &s.hotUp)
	if err != nil {
		return s, fmt.Errorf("read pg_stat_user_tables: %w", err)
	}
	return s, nil
}

// tickRowBytes measures reconciler_ticks per row. onDisk divides every partition's size
// (heap, indexes, free-space and visibility maps, TOAST, the empty partitions made ahead)
// by the rows: on a short run it is dominated by fixed overhead and by the heap pages
// Postgres extends ahead under concurrent inserts, which later rows fill. steady leaves
// those out: the heap's bytes in use (pgstattuple: length minus free space) plus the
// indexes of the partitions that hold rows, whose free space is the B-tree's own (random
// inserts settle near 70% full), per row. Without pgstattuple, steady is onDisk.
func tickRowBytes(ctx context.Context, pool *pgxpool.Pool) (steady, onDisk float64, err error) {
	var bytes, rows int64
	err = pool.QueryRow(ctx, `
SELECT (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('reconciler_ticks') WHERE isleaf),
       (SELECT count(*) FROM reconciler_ticks)`).Scan(&bytes, &rows)
	if err != nil {
		return 0, 0, fmt.Errorf("measure reconciler_ticks: %w", err)
	}
	if rows == 0 {
		return 0, 0, nil
	}
	onDisk = float64(bytes) / float64(rows)
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pgstattuple`); err != nil {
		return onDisk, onDisk, nil
	}
	var used int64
	err = pool.QueryRow(ctx, `
SELECT coalesce(sum(s.table_len - s.free_space + pg_indexes_size(p.relid)), 0)::bigint
FROM pg_partition_tree('reconciler_ticks') p, LATERAL pgstattuple(p.relid) s
WHERE p.isleaf AND s.tuple_count > 0`).Scan(&used)
	if err != nil {
		return 0, 0, fmt.Errorf("measure reconciler_ticks with pgstattuple: %w", err)
	}
	return float64(used) / float64(rows), onDisk, nil
}

// queueDepth counts the tick jobs waiting and running.
func queueDepth(ctx context.Context, pool *pgxpool.Pool) (waiting, running int, err error) {
	err = pool.QueryRow(ctx, `/* bench */
SELECT count(*) FILTER (WHERE state IN ('available', 'scheduled', 'retryable')), count(*) FILTER (WHERE state = 'running')
FROM river_job WHERE queue = $1`, jobs.QueueTicks).Scan(&waiting, &running)
	return waiting, running, err
}

// Statement is one line of pg_stat_statements: where the server spent its time.
type Statement struct {
	Query   string  `json:"query"`
	Calls   int64   `json:"calls"`
	TotalMS float64 `json:"total_ms"`
	MeanMS  float64 `json:"mean_ms"`
}

// resetStatements clears pg_stat_statements when the extension is available (it needs
// shared_preload_libraries = 'pg_stat_statements'); it reports whether it is.
func resetStatements(ctx context.Context, pool *pgxpool.Pool) bool {
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return false
	}
	_, err := pool.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	return err == nil
}

// harnessMark starts the text of the harness's own queries during a measurement, so that
// statementsRun can leave them out.
const harnessMark = "/* bench */"

// statementsRun counts the statements the bench database ran since pg_stat_statements was
// last reset, other than the harness's own.
func statementsRun(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, harnessMark+`
SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND NOT starts_with(query, $1) AND query <> 'SELECT pg_stat_statements_reset()'`, harnessMark).Scan(&n)
	return n, err
}

// topStatements lists the statements of the bench database that took the most time.
func topStatements(ctx context.Context, pool *pgxpool.Pool, n int) ([]Statement, error) {
	rows, err := pool.Query(ctx, `
SELECT regexp_replace(left(query, 160), '\s+', ' ', 'g'), calls, total_exec_time, mean_exec_time
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Statement
	for rows.Next() {
		var s Statement
		if err := rows.Scan(&s.Query, &s.Calls, &s.TotalMS, &s.MeanMS); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// roundTrips counts the round trips the pool's connections make to the server: each
// statement sent alone (BEGIN and COMMIT included) and each pipelined batch is one. Once
// per connection pgx also prepares a statement it has not seen: not counted.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (*roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.n.Add(1)
	return ctx
}
func (*roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}
