package obs

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are gastown's Prometheus metrics, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	tickDuration *prometheus.HistogramVec
	ticks        *prometheus.CounterVec
	events       *prometheus.CounterVec
	actions      *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	quiet        prometheus.Counter
	sideEffects  *prometheus.CounterVec
	violations   *prometheus.CounterVec
}

// NewMetrics registers the metrics, the pool's statistics and River's queue depth (read
// from river_job at scrape time) on a new registry.
func NewMetrics(pool *pgxpool.Pool) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		tickDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gastown_tick_duration_seconds", Help: "Wall clock of a tick, by phase (total, drain, snapshot, reconcile, apply).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"phase"}),
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_ticks_total", Help: "Ticks by outcome: ok, busy (town held by another tick), gone (town deleted), error.",
		}, []string{"outcome"}),
		quiet: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gastown_quiet_ticks_total", Help: "Quiet ticks: idle towns ticked in batches (also counted as ok ticks).",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_events_total", Help: "Town events drained by ticks, by result: applied, failed (will retry), dead.",
		}, []string{"result"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_actions_total", Help: "Actions emitted by the reconciler, by type.",
		}, []string{"type"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_actions_skipped_total", Help: "Actions skipped at apply time because their precondition no longer held, by type.",
		}, []string{"type"}),
		sideEffects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_side_effects_total", Help: "Side effects by kind and outcome (requested by ticks; succeeded or failed as reported back).",
		}, []string{"kind", "outcome"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gastown_invariant_violations_started_total", Help: "Invariant violation episodes that started, by invariant.",
		}, []string{"invariant"}),
	}
	m.Registry.MustRegister(m.tickDuration, m.ticks, m.quiet, m.events, m.actions, m.skipped, m.sideEffects, m.violations,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if pool != nil {
		m.Registry.MustRegister(&poolCollector{pool: pool}, &queueCollector{pool: pool})
	}
	return m
}

// TickObserved records a finished tick (outcome ok).
func (m *Metrics) TickObserved(total, drain, snapshot, reconcile, apply time.Duration) {
	m.ticks.WithLabelValues("ok").Inc()
	for phase, d := range map[string]time.Duration{"total": total, "drain": drain, "snapshot": snapshot, "reconcile": reconcile, "apply": apply} {
		m.tickDuration.WithLabelValues(phase).Observe(d.Seconds())
	}
}

// QuietTicks counts quiet ticks (each is also observed with TickObserved).
func (m *Metrics) QuietTicks(n int) { m.quiet.Add(float64(n)) }

// TickOutcome counts a tick that did not run to the end (busy, gone, error).
func (m *Metrics) TickOutcome(outcome string) { m.ticks.WithLabelValues(outcome).Inc() }

// EventsDrained counts events by result.
func (m *Metrics) EventsDrained(applied, failed, dead int) {
	m.events.WithLabelValues("applied").Add(float64(applied))
	m.events.WithLabelValues("failed").Add(float64(failed))
	m.events.WithLabelValues("dead").Add(float64(dead))
}

// Actions counts emitted and skipped actions by type.
func (m *Metrics) Actions(emitted, skipped map[string]int) {
	for t, n := range emitted {
		m.actions.WithLabelValues(t).Add(float64(n))
	}
	for t, n := range skipped {
		m.skipped.WithLabelValues(t).Add(float64(n))
	}
}

// SideEffect counts a side effect of a kind with an outcome (requested, succeeded, failed).
func (m *Metrics) SideEffect(kind, outcome string) {
	m.sideEffects.WithLabelValues(kind, outcome).Inc()
}

// ViolationStarted counts a violation episode that started.
func (m *Metrics) ViolationStarted(invariant string) { m.violations.WithLabelValues(invariant).Inc() }

// poolCollector exports pgxpool statistics.
type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolConns    = prometheus.NewDesc("gastown_db_pool_connections", "Connections of the pool by state.", []string{"state"}, nil)
	poolAcquires = prometheus.NewDesc("gastown_db_pool_acquires_total", "Connections acquired from the pool.", nil, nil)
	poolWait     = prometheus.NewDesc("gastown_db_pool_acquire_wait_seconds_total", "Time spent waiting for a connection.", nil, nil)
	queueDepth   = prometheus.NewDesc("gastown_river_jobs", "River jobs by queue and state (available, scheduled, running, retryable).", []string{"queue", "state"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolConns
	ch <- poolAcquires
	ch <- poolWait
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(s.TotalConns()), "total")
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWait, prometheus.CounterValue, s.AcquireDuration().Seconds())
}

// queueCollector reads River's queue depth at scrape time.
type queueCollector struct{ pool *pgxpool.Pool }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDepth }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// River's own table, read for a gauge: not town state, so not an sqlc query of ours.
	rows, err := c.pool.Query(ctx, `SELECT queue, state::text, count(*) FROM river_job
		WHERE state IN ('available', 'scheduled', 'running', 'retryable') GROUP BY queue, state`)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var queue, state string
		var n int64
		if rows.Scan(&queue, &state, &n) == nil {
			ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(n), queue, state)
		}
	}
}
