package jobs

import (
	"errors"
	"time"

	"gastown/reconciler"
)

// Config tunes the workers. The zero value of every field takes the default.
type Config struct {
	// TickWorkers is how many ticks run at once in this process (default 8: a tick is a
	// few milliseconds of Postgres work; more concurrent ticks than cores only queue there).
	TickWorkers int
	// SideEffectWorkers is how many side-effect jobs run at once (default 32).
	SideEffectWorkers int
	// FetchCooldown is River's minimum time between fetches of one queue, and the least
	// time between two announcements of new jobs in one queue (default
	// DefaultFetchCooldown).
	FetchCooldown time.Duration
	// FetchPollInterval is River's fallback poll interval (default 1 s). Jobs are fetched
	// when an insert announces them; the poll only catches what no announcement reached.
	FetchPollInterval time.Duration
	// TickPollInterval is the fallback poll of the tick queue (default 200 ms, at most
	// FetchPollInterval): how soon a tick snoozed because its town was busy runs again.
	TickPollInterval time.Duration
	// ActiveInterval is the cadence of a town with active work (default 5 s).
	ActiveInterval time.Duration
	// IdleInterval is the cadence of an idle town (default 5 min).
	IdleInterval time.Duration
	// SweepInterval is how often the leader looks for due towns and lost wake-ups
	// (default 1 s).
	SweepInterval time.Duration
	// QuietInterval is how often the leader's sweep ticks the due towns on the idle
	// cadence that nothing changed since their last tick, in batches (quiet ticks, default
	// 5 s; negative: never, every town gets a full tick of its own). Such a town ticks up
	// to this much after it was due and keeps its cadence.
	QuietInterval time.Duration
	// QuietBatch bounds the towns of one quiet batch, one transaction (default 2,000).
	QuietBatch int
	// DrainBatch is the most events one tick drains (default 500).
	DrainBatch int
	// MaxEventAttempts is how often a failing event is tried before it goes dead
	// (default 3).
	MaxEventAttempts int
	// BusyRetry is how long a tick that finds its town locked waits (default 50 ms).
	BusyRetry time.Duration
	// TickTimeout bounds one tick (default 30 s).
	TickTimeout time.Duration
	// StartTimeout bounds an agent start (default 60 s).
	StartTimeout time.Duration
	// CodeHostTimeout bounds a PR poll or merge on the code host (default 30 s).
	CodeHostTimeout time.Duration
	// RescueStuckJobsAfter is when River rescues a job whose worker died: at least, and by
	// default, 10 s past the longest job's timeout (75 s with the default start timeout),
	// so that a slow job still running is never rescued and run twice.
	RescueStuckJobsAfter time.Duration
	// TickRetention is how long reconciler_ticks rows are kept (default 7 days).
	TickRetention time.Duration
	// RollupRetention is how long the per-minute rollup is kept (default 90 days).
	RollupRetention time.Duration
	// ObserveInterval is how often the leader asks the runtime for the container status of
	// working and stalled agents (default 5 s, the reference's active cadence).
	ObserveInterval time.Duration
	// AgentTokenTTL is how long an agent's callback token is valid (default 24 h).
	AgentTokenTTL time.Duration
	// EventRetention is how long processed events are kept (default 7 days).
	EventRetention time.Duration
	// WorkerID names this process to River (its client ID) and in logs.
	WorkerID string
	// CheckpointEvery and CheckpointInterval: a tick that leaves a replay record also
	// checkpoints the town's state every CheckpointEvery records (default 1,000) or when
	// the last checkpoint is older than CheckpointInterval (default 1 h).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// CompletedJobRetention is how long River keeps completed jobs (default 1 min; keep
	// them longer to audit side effects). A tick's job is not kept at all: the tick
	// deletes it as it commits (db.CompleteTickJob).
	CompletedJobRetention time.Duration
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.TickWorkers < 0 || c.SideEffectWorkers < 0 {
		errs = append(errs, errors.New("worker counts must not be negative"))
	}
	if c.ActiveInterval < 0 || c.IdleInterval < 0 || c.SweepInterval < 0 || c.ObserveInterval < 0 {
		errs = append(errs, errors.New("active, idle, sweep and observe intervals must not be negative"))
	}
	if c.DrainBatch < 0 || c.MaxEventAttempts < 0 {
		errs = append(errs, errors.New("drain batch and event attempts must not be negative"))
	}
	if c.CheckpointEvery < 0 || c.CheckpointInterval < 0 {
		errs = append(errs, errors.New("checkpoint-every and checkpoint-interval must not be negative"))
	}
	if c.TickTimeout < 0 || c.StartTimeout < 0 || c.CodeHostTimeout < 0 || c.RescueStuckJobsAfter < 0 || c.CompletedJobRetention < 0 {
		errs = append(errs, errors.New("tick-timeout, start-timeout, code-host-timeout, rescue-stuck-jobs-after and completed-job-retention must not be negative"))
	}
	return errors.Join(errs...)
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&c.TickWorkers, 8)
	defInt(&c.SideEffectWorkers, 32)
	def(&c.FetchCooldown, DefaultFetchCooldown)
	def(&c.FetchPollInterval, time.Second)
	def(&c.ActiveInterval, reconciler.ActiveTickInterval)
	def(&c.IdleInterval, reconciler.IdleTickInterval)
	def(&c.SweepInterval, time.Second)
	defInt(&c.QuietBatch, 2000)
	if c.QuietInterval == 0 {
		c.QuietInterval = 5 * time.Second
	}
	defInt(&c.DrainBatch, DefaultDrainBatch)
	defInt(&c.MaxEventAttempts, 3)
	def(&c.BusyRetry, 50*time.Millisecond)
	def(&c.TickTimeout, 30*time.Second)
	def(&c.CompletedJobRetention, time.Minute)
	def(&c.EventRetention, reconciler.EventRetention)
	def(&c.AgentTokenTTL, 24*time.Hour)
	def(&c.TickRetention, 7*24*time.Hour)
	def(&c.RollupRetention, 90*24*time.Hour)
	def(&c.ObserveInterval, reconciler.ActiveTickInterval)
	defInt(&c.CheckpointEvery, 1000)
	def(&c.CheckpointInterval, time.Hour)
	def(&c.StartTimeout, 60*time.Second)
	def(&c.CodeHostTimeout, 30*time.Second)
	if longest := c.longestJob(); c.RescueStuckJobsAfter < longest+10*time.Second {
		c.RescueStuckJobsAfter = longest + 10*time.Second
	}
	if c.FetchPollInterval < c.FetchCooldown {
		c.FetchPollInterval = c.FetchCooldown
	}
	def(&c.TickPollInterval, 200*time.Millisecond)
	c.TickPollInterval = min(max(c.TickPollInterval, c.FetchCooldown), c.FetchPollInterval)
	return c
}

// longestJob is the longest any job may run: a tick, or a side-effect call with the time
// to report its outcome.
func (c Config) longestJob() time.Duration {
	return max(c.TickTimeout, max(c.StartTimeout, c.CodeHostTimeout, stopTimeout, messageTimeout)+reportTime)
}

// DefaultDrainBatch is the default of Config.DrainBatch.
const DefaultDrainBatch = 500

// DefaultFetchCooldown is the default of Config.FetchCooldown. River's own default, 100 ms,
// caps a queue near workers ÷ cooldown jobs/s. Every event waits for up to one cooldown
// twice on its way to its tick (its announcement, then the fetch): at half the fleet's
// capacity 2 ms took ~0.9 ms off the queued part of the event-to-applied latency p50
// against 5 ms, at no cost in ticks/s (BENCHMARKS.md, fourteenth round).
const DefaultFetchCooldown = 2 * time.Millisecond
