package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gastown/agentrt"
	"gastown/agenttoken"
	"gastown/codehost"
	"gastown/db"
	"gastown/jobs"
	"gastown/obs"
	"gastown/reconciler"
	"gastown/web"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "gastown",
		Short: "Postgres-backed worker fleet that runs the town reconciler",
		Long: "gastown runs the town reconciler of an agent-orchestration control plane: facts arrive\n" +
			"as town events, River jobs tick each town in one Postgres transaction, side effects leave\n" +
			"through a transactional outbox.\n\n" +
			"Start with `gastown dev` for a demo town on the local database.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A tick builds a town's snapshot afresh: many short-lived objects, and a live heap
	// that stays small. Collecting at 4× the live heap instead of Go's 2× cuts the
	// collector's share of a large town's snapshot load by a third (BENCHMARKS.md).
	gcPercent := root.PersistentFlags().Int("gc-percent", envInt("GASTOWN_GC_PERCENT", 400),
		"Go garbage collector target of this process (GOGC); a GOGC environment variable wins unless this flag is given (env GASTOWN_GC_PERCENT)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkEnv(cmd); err != nil {
			return err
		}
		if os.Getenv("GOGC") == "" || cmd.Flags().Changed("gc-percent") {
			debug.SetGCPercent(*gcPercent)
		}
		return nil
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newMigrateCommand(), newServeCommand(), newDevCommand(), newBenchCommand(), newVerifyHistoryCommand())
	root.AddCommand(newOpsCommands()...)
	return root
}

// flagError says what a flag's value should look like instead of the parser's words
// (`strconv.ParseInt: parsing "abc": invalid syntax`).
func flagError(_ *cobra.Command, err error) error {
	var bad *pflag.InvalidValueError
	if !errors.As(err, &bad) {
		return err
	}
	want := map[string]string{
		"int": "a whole number", "int32": "a whole number", "int64": "a whole number", "uint64": "a whole number",
		"float64": "a number", "duration": "a duration such as 500ms, 5s or 2m", "bool": "true or false",
	}[bad.GetFlag().Value.Type()]
	if want == "" {
		return err
	}
	return fmt.Errorf("--%s must be %s, not %q", bad.GetFlag().Name, want, bad.GetValue())
}

func newMigrateCommand() *cobra.Command {
	var c config
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply River's and gastown's migrations (idempotent, safe to run concurrently)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.MaxConns = 2
			if err := c.validate(); err != nil {
				return err
			}
			logger := newLogger(c.LogLevel, c.LogFormat)
			pool, err := db.Connect(cmd.Context(), c.DatabaseURL, int32(c.MaxConns))
			if err != nil {
				return err
			}
			defer pool.Close()
			return db.Migrate(cmd.Context(), pool, logger)
		},
	}
	bindCommon(cmd, &c)
	return cmd
}

func newServeCommand() *cobra.Command {
	var (
		c                config
		tokens           string
		noAPI, noWorkers bool
		simWork, simBeat time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API and the River workers (scale them separately with --no-api / --no-workers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.AdminTokens = parseTokens(tokens)
			if err := c.validate(); err != nil {
				return err
			}
			if noAPI && noWorkers {
				return errors.New("--no-api and --no-workers together leave nothing to run")
			}
			if !noAPI && len(c.AdminTokens) == 0 {
				return errors.New("the API needs ADMIN_TOKEN (or --admin-token); set one, or run with --no-api")
			}
			if len(c.AgentTokenSecret) < 16 {
				return errors.New("set GASTOWN_AGENT_TOKEN_SECRET (or --agent-token-secret) to a secret of 16+ characters, the same on every process: it signs the agents' callback tokens")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, c, runOptions{api: !noAPI, workers: !noWorkers,
				sim: agentrt.SimConfig{WorkMin: simWork, WorkMax: simWork * 2, HeartbeatInterval: simBeat}})
		},
	}
	bindCommon(cmd, &c)
	bindServe(cmd, &c, &tokens, productionDefaults)
	cmd.Flags().BoolVar(&noAPI, "no-api", false, "run only the workers")
	cmd.Flags().BoolVar(&noWorkers, "no-workers", false, "run only the API")
	cmd.Flags().DurationVar(&simWork, "sim-work", 30*time.Second, "simulated agent runtime: minimum work time of an agent")
	cmd.Flags().DurationVar(&simBeat, "sim-heartbeat", 30*time.Second, "simulated agent runtime: heartbeat interval")
	return cmd
}

// runOptions choose what one process runs.
type runOptions struct {
	api, workers bool
	sim          agentrt.SimConfig
	evolution    codehost.Evolution // how simulated PRs evolve
	// ready, when set, is called once everything runs, with the API address.
	ready func(ctx context.Context, a *app) error
}

// app is a running process: what ready callbacks may use.
type app struct {
	store  *db.Store
	svc    *jobs.Service
	addr   string
	logger *slog.Logger
}

// run connects, migrates, starts the API and workers, and stops them in order (HTTP,
// River, simulated agents, pool) when ctx ends or ready returns.
func run(ctx context.Context, c config, opts runOptions) error {
	logger := newLogger(c.LogLevel, c.LogFormat)
	var ln net.Listener
	if opts.api { // the port first: a taken one fails before anything is migrated
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(c.Port))); err != nil {
			return fmt.Errorf("listen on port %d: %w (set PORT or --port to a free port)", c.Port, err)
		}
		defer func() { _ = ln.Close() }()
	}
	pool, err := db.Connect(ctx, c.DatabaseURL, int32(c.MaxConns))
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := db.Migrate(ctx, pool, logger); err != nil {
		return err
	}
	store := db.NewStore(pool)
	reporter, err := obs.NewSentry(c.SentryDSN, c.SentryEnvironment, release(), logger)
	if err != nil {
		return err
	}
	defer reporter.Flush(2 * time.Second)

	if c.Jobs.WorkerID == "" {
		host, _ := os.Hostname()
		c.Jobs.WorkerID = host + "-" + strconv.Itoa(os.Getpid())
	}
	// The simulated runtime reports through the service's Events, which exist only once
	// the service does: a small indirection breaks the cycle.
	var host codehost.Host
	if c.CodeHost == "github" {
		host = c.gitHub()
	} else {
		evolving := codehost.NewEvolvingSimulator(opts.evolution)
		opts.sim.PRHost = evolving
		host = evolving
	}
	var reportTo agentrt.Reporter
	sim := agentrt.NewSimulator(opts.sim, reporterFunc(func() agentrt.Reporter { return reportTo }), logger)
	defer sim.Close()
	var runtime agentrt.Runtime = sim
	if c.Runtime == "http" {
		if runtime, err = agentrt.NewHTTP(c.RuntimeURL, c.RuntimeToken, c.PublicURL); err != nil {
			return err
		}
	}
	signer, err := agenttoken.NewSigner(c.AgentTokenSecret)
	if err != nil {
		return err
	}
	metrics := obs.NewMetrics(pool)
	deps := jobs.Deps{Store: store, Runtime: runtime, CodeHost: host, Logger: logger, Reporter: reporter, ErrorHandler: reporter,
		Tokens: signer, Observer: metrics}
	if chaosFailpoint != nil {
		if deps.Failpoint, err = chaosFailpoint(); err != nil {
			return err
		}
	}
	if opts.workers {
		// River's fetches and completions commit without waiting for their flush
		// (jobs.NewRiverPool); closed after the service stopped (deferred before it).
		if deps.RiverPool, err = jobs.NewRiverPool(ctx, pool); err != nil {
			return err
		}
		defer deps.RiverPool.Close()
	}
	svc, err := jobs.New(deps, c.Jobs, opts.workers)
	if err != nil {
		return err
	}
	reportTo = svc.Events

	var srv *http.Server
	a := &app{store: store, svc: svc, logger: logger}
	if opts.api {
		api, err := web.New(web.Config{AdminTokens: c.AdminTokens, AgentTokens: signer, Reporter: reporter,
			Metrics: promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})}, store, svc, logger)
		if err != nil {
			return err
		}
		if err := api.Start(ctx); err != nil {
			return fmt.Errorf("start River UI: %w", err)
		}
		a.addr = ln.Addr().String()
		srv = &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("http server", "error", err)
			}
		}()
		logger.Info("API listening", "addr", a.addr)
	}
	if opts.workers {
		if err := svc.Start(ctx); err != nil {
			return fmt.Errorf("start workers: %w", err)
		}
		logger.Info("workers running", "worker_id", c.Jobs.WorkerID)
	}

	var runErr error
	if opts.ready != nil {
		runErr = opts.ready(ctx, a)
	} else {
		<-ctx.Done()
	}
	logger.Info("shutting down")
	shutdown(srv, svc, opts.workers, pool, logger)
	return runErr
}

func shutdown(srv *http.Server, svc *jobs.Service, workers bool, _ *pgxpool.Pool, logger *slog.Logger) {
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := srv.Shutdown(ctx); err != nil {
			logger.Warn("http shutdown", "error", err)
		}
		cancel()
	}
	if workers {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := svc.Stop(ctx); err != nil {
			logger.Warn("worker shutdown", "error", err)
		}
		cancel()
	}
}

// reporterFunc defers to the Reporter its function returns at call time.
type reporterFunc func() agentrt.Reporter

func (f reporterFunc) Heartbeat(ctx context.Context, townID, agentID string, a agentrt.Activity) error {
	return f().Heartbeat(ctx, townID, agentID, a)
}

func (f reporterFunc) Done(ctx context.Context, townID, agentID string, p reconciler.AgentDonePayload) error {
	return f().Done(ctx, townID, agentID, p)
}

func (f reporterFunc) Completed(ctx context.Context, townID, agentID string, p reconciler.AgentCompletedPayload) error {
	return f().Completed(ctx, townID, agentID, p)
}
