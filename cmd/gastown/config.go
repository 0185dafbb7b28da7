package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gastown/codehost"
	"gastown/db"
	"gastown/jobs"
)

// config is everything gastown reads from the environment and flags. Flags default to the
// environment variable named in their help; the zero value of a field is its default.
type config struct {
	// DatabaseURL is the Postgres connection string (DATABASE_URL).
	DatabaseURL string
	// Port is the HTTP port of the API (PORT).
	Port int
	// AdminTokens are the admin API's bearer tokens, comma-separated in ADMIN_TOKEN.
	AdminTokens []string
	// SentryDSN enables Sentry reporting (SENTRY_DSN).
	SentryDSN string
	// AgentTokenSecret signs the per-agent callback tokens (GASTOWN_AGENT_TOKEN_SECRET);
	// every process of a fleet needs the same one.
	AgentTokenSecret string
	// Jobs tunes the workers.
	Jobs jobs.Config
	// MaxConns sizes the connection pool (GASTOWN_MAX_CONNS).
	MaxConns int
	// LogLevel is debug, info, warn or error (GASTOWN_LOG_LEVEL).
	LogLevel string
	// Runtime is the agent runtime: sim (built-in simulator) or http (GASTOWN_RUNTIME).
	Runtime string
	// RuntimeURL and RuntimeToken reach an HTTP agent runtime (GASTOWN_RUNTIME_URL,
	// GASTOWN_RUNTIME_TOKEN).
	RuntimeURL, RuntimeToken string
	// PublicURL is the API's base URL as agents reach it, for their callbacks
	// (GASTOWN_PUBLIC_URL).
	PublicURL string
	// CodeHost is where PRs live: sim or github (GASTOWN_CODE_HOST).
	CodeHost string
	// GitHubToken is the default GitHub token (GITHUB_TOKEN); GitHubTokens overrides it per
	// owner or owner/repo ("acme=tok1,acme/web=tok2", GASTOWN_GITHUB_TOKENS).
	GitHubToken, GitHubTokens string
	// GitHubAPIURL is the REST base (GITHUB_API_URL; GitHub Enterprise: https://host/api/v3).
	GitHubAPIURL string
	// LogFormat is text or json (GASTOWN_LOG_FORMAT).
	LogFormat string
	// SentryEnvironment names the deployment in Sentry (SENTRY_ENVIRONMENT).
	SentryEnvironment string
}

func envString(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// hideSecrets keeps what the environment gave secret flags out of --help: a token's
// default is not shown; a URL's is, with its password masked, unless it holds one that
// cannot be masked (a keyword DSN, a password parameter), when it is not shown either.
func hideSecrets(f *pflag.FlagSet, names ...string) {
	for _, n := range names {
		fl := f.Lookup(n)
		if fl == nil || fl.DefValue == "" {
			continue
		}
		if n != "database-url" && n != "url" {
			fl.DefValue = ""
			continue
		}
		u, err := url.Parse(fl.DefValue)
		switch {
		case err != nil || u.Scheme == "" || strings.Contains(strings.ToLower(u.RawQuery), "password"):
			fl.DefValue = ""
		default:
			fl.DefValue = u.Redacted()
		}
	}
}

// envOfFlag finds the variable a flag's usage names ("… (env NAME)").
var envOfFlag = regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`)

// checkEnv fails when a flag of cmd that its command line leaves unset names an
// environment variable whose value is not of the flag's type (envInt and envDuration fell
// back to the default for it, so that --help still shows one): a typo must not run with
// the default silently.
func checkEnv(cmd *cobra.Command) error {
	var problems []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		m := envOfFlag.FindStringSubmatch(f.Usage)
		if f.Changed || m == nil {
			return
		}
		v := os.Getenv(m[1])
		if v == "" {
			return
		}
		switch f.Value.Type() { // as envInt and envDuration parse them; strings take any value
		case "int":
			if _, err := strconv.Atoi(v); err != nil {
				problems = append(problems, fmt.Sprintf("%s=%q is not a whole number (for --%s); fix or unset it", m[1], v, f.Name))
			}
		case "duration":
			if _, err := time.ParseDuration(v); err != nil {
				problems = append(problems, fmt.Sprintf("%s=%q is not a duration such as 500ms, 5s or 2m (for --%s); fix or unset it", m[1], v, f.Name))
			}
		}
	})
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// bindCommon registers the flags every running command shares.
func bindCommon(cmd *cobra.Command, c *config) {
	f := cmd.Flags()
	f.StringVar(&c.DatabaseURL, "database-url", envString("DATABASE_URL", db.DefaultURL), "Postgres connection string (env DATABASE_URL)")
	f.StringVar(&c.LogLevel, "log-level", envString("GASTOWN_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env GASTOWN_LOG_LEVEL)")
	f.StringVar(&c.LogFormat, "log-format", envString("GASTOWN_LOG_FORMAT", "text"), "log format: text or json (env GASTOWN_LOG_FORMAT)")
	hideSecrets(f, "database-url")
}

// serveDefaults are the defaults of bindServe's flags that differ between serve and dev.
type serveDefaults struct {
	activeInterval, sweepInterval time.Duration
	sentryEnvironment             string
}

// productionDefaults are serve's.
var productionDefaults = serveDefaults{activeInterval: 5 * time.Second, sweepInterval: time.Second, sentryEnvironment: "production"}

// bindServe registers the flags of the commands that run the API and workers; the
// environment overrides def, flags override both.
func bindServe(cmd *cobra.Command, c *config, tokens *string, def serveDefaults) {
	f := cmd.Flags()
	f.IntVar(&c.MaxConns, "max-conns", envInt("GASTOWN_MAX_CONNS", 40), "connection pool size (env GASTOWN_MAX_CONNS); a worker process gives River a pool of its own besides, of up to 6")
	f.IntVar(&c.Port, "port", envInt("PORT", 8080), "HTTP port of the API (env PORT)")
	f.StringVar(tokens, "admin-token", envString("ADMIN_TOKEN", ""), "admin API bearer tokens, comma-separated for rotation (env ADMIN_TOKEN)")
	f.StringVar(&c.SentryDSN, "sentry-dsn", envString("SENTRY_DSN", ""), "Sentry DSN; empty disables reporting (env SENTRY_DSN)")
	f.StringVar(&c.SentryEnvironment, "sentry-environment", envString("SENTRY_ENVIRONMENT", def.sentryEnvironment), "environment reported to Sentry (env SENTRY_ENVIRONMENT)")
	f.StringVar(&c.AgentTokenSecret, "agent-token-secret", envString("GASTOWN_AGENT_TOKEN_SECRET", ""), "secret (16+ characters) that signs agent callback tokens; the same on every process (env GASTOWN_AGENT_TOKEN_SECRET)")
	f.StringVar(&c.Runtime, "runtime", envString("GASTOWN_RUNTIME", "sim"), "agent runtime: sim (built-in simulator) or http (env GASTOWN_RUNTIME)")
	f.StringVar(&c.RuntimeURL, "runtime-url", envString("GASTOWN_RUNTIME_URL", ""), "base URL of the HTTP agent runtime, see docs/agent-runtime.md (env GASTOWN_RUNTIME_URL)")
	f.StringVar(&c.RuntimeToken, "runtime-token", envString("GASTOWN_RUNTIME_TOKEN", ""), "bearer token for the HTTP agent runtime (env GASTOWN_RUNTIME_TOKEN)")
	f.StringVar(&c.PublicURL, "public-url", envString("GASTOWN_PUBLIC_URL", ""), "the API's base URL as agents reach it, for their callbacks (env GASTOWN_PUBLIC_URL)")
	f.StringVar(&c.CodeHost, "code-host", envString("GASTOWN_CODE_HOST", "sim"), "code host: sim (built-in simulator) or github (env GASTOWN_CODE_HOST)")
	f.StringVar(&c.GitHubToken, "github-token", envString("GITHUB_TOKEN", ""), "default GitHub token (env GITHUB_TOKEN)")
	f.StringVar(&c.GitHubTokens, "github-tokens", envString("GASTOWN_GITHUB_TOKENS", ""), "GitHub tokens per owner or owner/repo, e.g. acme=tok1,acme/web=tok2 (env GASTOWN_GITHUB_TOKENS)")
	f.StringVar(&c.GitHubAPIURL, "github-api-url", envString("GITHUB_API_URL", "https://api.github.com"), "GitHub REST API base (env GITHUB_API_URL)")
	f.IntVar(&c.Jobs.TickWorkers, "tick-workers", envInt("GASTOWN_TICK_WORKERS", 8), "ticks run at once by this process (env GASTOWN_TICK_WORKERS)")
	f.IntVar(&c.Jobs.SideEffectWorkers, "side-effect-workers", envInt("GASTOWN_SIDE_EFFECT_WORKERS", 32), "side-effect jobs run at once (env GASTOWN_SIDE_EFFECT_WORKERS)")
	f.DurationVar(&c.Jobs.ActiveInterval, "active-interval", envDuration("GASTOWN_ACTIVE_INTERVAL", def.activeInterval), "tick cadence of a town with active work (env GASTOWN_ACTIVE_INTERVAL)")
	f.DurationVar(&c.Jobs.IdleInterval, "idle-interval", envDuration("GASTOWN_IDLE_INTERVAL", 5*time.Minute), "tick cadence of an idle town (env GASTOWN_IDLE_INTERVAL)")
	f.DurationVar(&c.Jobs.SweepInterval, "sweep-interval", envDuration("GASTOWN_SWEEP_INTERVAL", def.sweepInterval), "how often the leader looks for due towns (env GASTOWN_SWEEP_INTERVAL)")
	f.DurationVar(&c.Jobs.ObserveInterval, "observe-interval", envDuration("GASTOWN_OBSERVE_INTERVAL", 5*time.Second), "how often the leader asks the agent runtime for the status of working and stalled agents (env GASTOWN_OBSERVE_INTERVAL)")
	f.DurationVar(&c.Jobs.QuietInterval, "quiet-interval", envDuration("GASTOWN_QUIET_INTERVAL", 5*time.Second), "how often the leader ticks due idle towns with nothing to do in batches; negative: never, each gets a full tick (env GASTOWN_QUIET_INTERVAL)")
	f.IntVar(&c.Jobs.DrainBatch, "drain-batch", envInt("GASTOWN_DRAIN_BATCH", 500), "most events one tick drains (env GASTOWN_DRAIN_BATCH)")
	f.IntVar(&c.Jobs.MaxEventAttempts, "max-event-attempts", envInt("GASTOWN_MAX_EVENT_ATTEMPTS", 3), "applies of a failing event before it goes dead (env GASTOWN_MAX_EVENT_ATTEMPTS)")
	f.DurationVar(&c.Jobs.TickTimeout, "tick-timeout", envDuration("GASTOWN_TICK_TIMEOUT", 30*time.Second), "longest a tick may run before it is abandoned and rolled back (env GASTOWN_TICK_TIMEOUT)")
	f.DurationVar(&c.Jobs.StartTimeout, "start-timeout", envDuration("GASTOWN_START_TIMEOUT", 60*time.Second), "longest an agent start may take before it counts as failed (env GASTOWN_START_TIMEOUT)")
	f.DurationVar(&c.Jobs.CodeHostTimeout, "code-host-timeout", envDuration("GASTOWN_CODE_HOST_TIMEOUT", 30*time.Second), "longest a PR poll or merge may take before it counts as failed (env GASTOWN_CODE_HOST_TIMEOUT)")
	f.DurationVar(&c.Jobs.RescueStuckJobsAfter, "rescue-stuck-jobs-after", envDuration("GASTOWN_RESCUE_STUCK_JOBS_AFTER", 0), "when a side-effect job whose process died runs again; at least 10 s past the longest job timeout, which is the default (env GASTOWN_RESCUE_STUCK_JOBS_AFTER)")
	f.DurationVar(&c.Jobs.CompletedJobRetention, "completed-job-retention", envDuration("GASTOWN_COMPLETED_JOB_RETENTION", time.Minute), "how long completed River jobs are kept, e.g. to audit side effects (env GASTOWN_COMPLETED_JOB_RETENTION)")
	f.IntVar(&c.Jobs.CheckpointEvery, "checkpoint-every", envInt("GASTOWN_CHECKPOINT_EVERY", 1000), "a town's state is checkpointed every this many recorded ticks (env GASTOWN_CHECKPOINT_EVERY)")
	f.DurationVar(&c.Jobs.CheckpointInterval, "checkpoint-interval", envDuration("GASTOWN_CHECKPOINT_INTERVAL", time.Hour), "... or when its last checkpoint is this old (env GASTOWN_CHECKPOINT_INTERVAL)")
	hideSecrets(f, "admin-token", "sentry-dsn", "agent-token-secret", "runtime-token", "github-token", "github-tokens")
}

func (c *config) validate() error {
	var problems []string
	if c.DatabaseURL == "" {
		problems = append(problems, "DATABASE_URL is empty")
	}
	if c.Port < 0 || c.Port > 65535 {
		problems = append(problems, fmt.Sprintf("PORT %d is not a TCP port", c.Port))
	}
	if c.MaxConns < 2 {
		problems = append(problems, "GASTOWN_MAX_CONNS must be at least 2")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		problems = append(problems, err.Error())
	}
	switch {
	case c.Runtime != "" && c.Runtime != "sim" && c.Runtime != "http":
		problems = append(problems, fmt.Sprintf("GASTOWN_RUNTIME %q is not sim or http", c.Runtime))
	case c.Runtime == "http" && c.RuntimeURL == "":
		problems = append(problems, "GASTOWN_RUNTIME=http needs GASTOWN_RUNTIME_URL (the agent runtime's base URL)")
	}
	if c.CodeHost != "" && c.CodeHost != "sim" && c.CodeHost != "github" {
		problems = append(problems, fmt.Sprintf("GASTOWN_CODE_HOST %q is not sim or github", c.CodeHost))
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		problems = append(problems, fmt.Sprintf("GASTOWN_LOG_FORMAT %q is not text or json", c.LogFormat))
	}
	if err := c.Jobs.Validate(); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(problems, "; "))
	}
	return nil
}

func parseTokens(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q is not debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// release names this build for Sentry: the VCS revision the binary was built from.
func release() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return "gastown@" + s.Value
			}
		}
	}
	return "gastown@dev"
}

// gitHub builds the GitHub code host: per-repository tokens, then per-owner, then the
// default.
func (c *config) gitHub() *codehost.GitHub {
	g := codehost.NewGitHub(c.GitHubToken)
	api := strings.TrimRight(c.GitHubAPIURL, "/")
	g.APIURL = api
	if api != "https://api.github.com" {
		g.GraphQLURL = strings.TrimSuffix(api, "/v3") + "/graphql"
		if u, err := url.Parse(api); err == nil {
			g.Host = u.Host
		}
	}
	tokens := map[string]string{}
	for _, kv := range strings.Split(c.GitHubTokens, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" && v != "" {
			tokens[strings.ToLower(k)] = v
		}
	}
	g.TokenFor = func(owner, repo string) string {
		if t := tokens[strings.ToLower(owner+"/"+repo)]; t != "" {
			return t
		}
		if t := tokens[strings.ToLower(owner)]; t != "" {
			return t
		}
		return c.GitHubToken
	}
	return g
}
