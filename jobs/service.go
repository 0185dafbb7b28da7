package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"gastown/agentrt"
	"gastown/agenttoken"
	"gastown/codehost"
	"gastown/db"
)

// Deps are what the service needs from the outside.
type Deps struct {
	Store *db.Store
	// RiverPool, when set, is the pool River runs its own statements on (fetches,
	// completions, leadership, maintenance): NewRiverPool's, which `serve` and the
	// benchmark open for a worker process. Default: the Store's pool. The service does not
	// close it.
	RiverPool *pgxpool.Pool
	Runtime   agentrt.Runtime // required when workers run
	// CodeHost is where PRs are polled and merged (default: a simulator).
	CodeHost codehost.Host
	// Tokens signs the per-agent callback tokens handed to started agents (nil: none).
	Tokens *agenttoken.Signer
	// Observer hears about ticks and side effects (default: nobody).
	Observer Observer
	Logger   *slog.Logger
	// Clock is the time ticks reconcile with (default time.Now).
	Clock func() time.Time
	// Reporter hears about dead events and invariant violations (default: nobody).
	Reporter Reporter
	// ErrorHandler hears about job errors and panics (default: logged by River).
	ErrorHandler river.ErrorHandler
	// OnTick, when set, is called after each committed tick (the benchmark harness
	// measures latency and phase timings with it). It must be quick.
	OnTick func(townID string, res TickResult)
	// OnAppend, when set, is called after Events.Append committed events, with their
	// sequence numbers (the harness measures event-commit-to-applied latency).
	OnAppend func(townID string, seqs []int64, committedAt time.Time)
	// OmitTickRow, when set and true, makes a tick skip its reconciler_ticks row. Only the
	// benchmark harness sets it, to measure what the row costs (ISSUE 8: ≤ 5% of ticks/s).
	OmitTickRow func() bool
	// Failpoint, when set, runs at named points of ticks and side-effect jobs (see
	// Stages); an error aborts the tick or job. Fault injection only: the chaos build of
	// the binary (cmd/gastown, tag chaos) sets it to kill its own process there.
	Failpoint func(ctx context.Context, stage, townID string) error
}

// Stages are the failpoints of a tick, in order, of a side-effect job and of an append:
//   - drained: the tick took its events and heartbeats;
//   - applied: actions applied, side-effect jobs inserted;
//   - recorded: the tick's row, record and schedule queued (they go out with the job's
//     completion and the commit, in one round trip);
//   - committed: the transaction committed, the follow-up wake-up not yet made;
//   - effect_done: a side-effect job called the outside world, its outcome not yet reported;
//   - appended: an append committed its events (with the tick job it inserted, if it
//     did), nothing after that done yet: no announcement of that job, no tick enqueued
//     for a town the append could not give one (an error here leaves it to the sweep).
var Stages = []string{"drained", "applied", "recorded", "committed", "effect_done", "appended"}

// Service is gastown on River: the client, the Ticker and the Events front door.
type Service struct {
	Client *river.Client[pgx.Tx]
	Ticker *Ticker
	Events *Events

	store    *db.Store
	runtime  agentrt.Runtime
	codeHost codehost.Host
	tokens   *agenttoken.Signer
	observer Observer
	onTick   func(string, TickResult)
	onAppend func(string, []int64, time.Time)
	announce *announcer
	workers  bool

	quietMu   sync.Mutex
	lastQuiet time.Time // when this process's sweep last ran quiet ticks

	stopRecovery context.CancelFunc
	recoveryDone chan struct{}
	cfg          Config
	logger       *slog.Logger
}

// testHooks are fault-injection points for tests; production never sets them.
type testHooks struct {
	failEvent func(db.Event) error
	failpoint func(ctx context.Context, stage, townID string) error
}

// New builds the service. With workers false the River client only inserts (an API-only
// process); with workers true it also works the tick and side-effect queues and, when it
// is the leader, runs the periodic sweep and maintenance.
func New(deps Deps, cfg Config, workers bool) (*Service, error) {
	return newService(deps, cfg, workers, testHooks{})
}

func newService(deps Deps, cfg Config, workers bool, hooks testHooks) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if hooks.failpoint == nil {
		hooks.failpoint = deps.Failpoint
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.Reporter == nil {
		deps.Reporter = nopReporter{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Observer == nil {
		deps.Observer = nopObserver{}
	}
	if deps.CodeHost == nil {
		deps.CodeHost = codehost.NewSimulator()
	}
	svc := &Service{store: deps.Store, runtime: deps.Runtime, codeHost: deps.CodeHost, tokens: deps.Tokens, observer: deps.Observer, onTick: deps.OnTick, onAppend: deps.OnAppend, cfg: cfg, logger: deps.Logger, workers: workers}
	svc.announce = newAnnouncer(deps.Store, cfg.FetchCooldown, deps.Logger)
	svc.Ticker = &Ticker{
		store: deps.Store, cfg: cfg, clock: deps.Clock, logger: deps.Logger, reporter: deps.Reporter,
		failEvent: hooks.failEvent, failpoint: hooks.failpoint, omitRow: deps.OmitTickRow,
	}
	rc := &river.Config{
		Logger:                      quietRiver(deps.Logger),
		ErrorHandler:                deps.ErrorHandler,
		CompletedJobRetentionPeriod: cfg.CompletedJobRetention,
		JobTimeout:                  cfg.TickTimeout,
		RescueStuckJobsAfter:        cfg.RescueStuckJobsAfter,
		FetchCooldown:               cfg.FetchCooldown,
		FetchPollInterval:           cfg.FetchPollInterval,
		ID:                          cfg.WorkerID,
	}
	if workers {
		if deps.Runtime == nil {
			return nil, fmt.Errorf("workers need an agent runtime")
		}
		w := river.NewWorkers()
		river.AddWorker(w, &TickTownWorker{svc: svc})
		river.AddWorker(w, &StartAgentWorker{svc: svc})
		river.AddWorker(w, &StopAgentWorker{svc: svc})
		river.AddWorker(w, &SendMessageWorker{svc: svc})
		river.AddWorker(w, &PollPRWorker{svc: svc})
		river.AddWorker(w, &MergePRWorker{svc: svc})
		river.AddWorker(w, &SweepWorker{svc: svc})
		river.AddWorker(w, &MaintenanceWorker{svc: svc})
		river.AddWorker(w, &RollupWorker{svc: svc})
		river.AddWorker(w, &ObserveWorker{svc: svc})
		rc.Workers = w
		rc.Queues = map[string]river.QueueConfig{
			// A tick that found its town busy is snoozed for BusyRetry; River records the
			// snooze up to 250 ms later (its batch completer) and only a fetch finds the
			// job again: the tick queue polls more often than the others.
			QueueTicks:       {MaxWorkers: cfg.TickWorkers, FetchPollInterval: cfg.TickPollInterval},
			QueueSideEffects: {MaxWorkers: cfg.SideEffectWorkers},
			// The periodic jobs (the sweep first) go in without an announcement: the
			// default queue polls as often as the sweep runs, at most every
			// FetchPollInterval.
			river.QueueDefault: {MaxWorkers: 4, FetchPollInterval: min(cfg.SweepInterval, cfg.FetchPollInterval)},
		}
		rc.PeriodicJobs = []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(cfg.SweepInterval),
				func() (river.JobArgs, *river.InsertOpts) { return SweepArgs{}, nil },
				&river.PeriodicJobOpts{ID: "sweep", RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
				func() (river.JobArgs, *river.InsertOpts) { return MaintenanceArgs{}, nil },
				&river.PeriodicJobOpts{ID: "maintenance", RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(time.Minute),
				func() (river.JobArgs, *river.InsertOpts) { return RollupArgs{}, nil },
				&river.PeriodicJobOpts{ID: "rollup", RunOnStart: true}),
			river.NewPeriodicJob(river.PeriodicInterval(cfg.ObserveInterval),
				func() (river.JobArgs, *river.InsertOpts) { return ObserveArgs{}, nil },
				&river.PeriodicJobOpts{ID: "observe_agents"}),
		}
	}
	riverPool := deps.Store.Pool
	if deps.RiverPool != nil {
		riverPool = deps.RiverPool
	}
	client, err := river.NewClient[pgx.Tx](quietDriver{riverpgxv5.New(riverPool)}, rc)
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	svc.Client = client
	svc.Ticker.insert = func(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) error {
		_, err := client.InsertManyTx(ctx, tx, params)
		return err
	}
	svc.Events = &Events{svc: svc}
	return svc, nil
}

// Wake enqueues a tick for a town (a no-op when one is already queued).
func (s *Service) Wake(ctx context.Context, townID string) error {
	res, err := s.Client.Insert(ctx, TickTownArgs{TownID: townID}, nil)
	if err != nil {
		return fmt.Errorf("enqueue tick of town %s: %w", townID, err)
	}
	if !res.UniqueSkippedAsDuplicate {
		s.announce.announce(QueueTicks)
	}
	return nil
}

// Start starts the River client (fetching jobs when the service has workers).
//
// A process with workers also watches, every second, for tick jobs whose worker died
// (see recoverOrphanedTicks). Every worker process does it, not only River's leader: a
// dead leader's term outlives it by up to 15 s, and its towns must not wait that long.
func (s *Service) Start(ctx context.Context) error {
	if err := s.Client.Start(ctx); err != nil {
		return err
	}
	if s.workers {
		loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.stopRecovery = cancel
		s.recoveryDone = make(chan struct{})
		go s.recoveryLoop(loopCtx)
	}
	return nil
}

// Stop stops the River client: running jobs finish first, until ctx expires.
func (s *Service) Stop(ctx context.Context) error {
	if s.stopRecovery != nil {
		s.stopRecovery()
		<-s.recoveryDone
	}
	return s.Client.Stop(ctx)
}

func (s *Service) recoveryLoop(ctx context.Context) {
	defer close(s.recoveryDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.recoverOrphanedTicks(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("recover orphaned ticks", "error", err)
		}
	}
}

// quietRiver gives River a logger that keeps its periodic informational lines (producer
// job counts every few seconds) out of a steady-state log, unless debug is on.
func quietRiver(l *slog.Logger) *slog.Logger {
	return slog.New(minLevel{h: l.Handler(), min: slog.LevelWarn}).With("component", "river")
}

type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return (l >= m.min || m.h.Enabled(ctx, slog.LevelDebug)) && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(a []slog.Attr) slog.Handler            { return minLevel{m.h.WithAttrs(a), m.min} }
func (m minLevel) WithGroup(n string) slog.Handler                 { return minLevel{m.h.WithGroup(n), m.min} }
