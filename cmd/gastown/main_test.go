package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db/dbtest"
)

func execute(ctx context.Context, args ...string) (string, error) {
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestUnreachablePostgresSaysWhatToDo(t *testing.T) {
	t.Parallel()
	_, err := execute(context.Background(), "migrate", "--database-url", "postgres://postgres@127.0.0.1:1/gastown?connect_timeout=2")
	require.Error(t, err)
	require.Contains(t, err.Error(), "cannot reach PostgreSQL at 127.0.0.1:1")
	require.Contains(t, err.Error(), "DATABASE_URL")
}

func TestInvalidConfigurationIsRejected(t *testing.T) {
	t.Parallel()
	_, err := execute(context.Background(), "serve", "--port", "70000", "--admin-token", "x")
	require.ErrorContains(t, err, "PORT 70000 is not a TCP port")
	_, err = execute(context.Background(), "serve", "--admin-token", "")
	require.ErrorContains(t, err, "ADMIN_TOKEN")
	_, err = execute(context.Background(), "serve", "--no-api", "--no-workers")
	require.ErrorContains(t, err, "nothing to run")
}

// TestMalformedEnvironmentIsRejected: a variable that does not parse as its flag's type
// stops the command that reads it with a message naming it, instead of the default
// running silently; a flag given on the command line wins over it, and a command without
// that flag ignores it. Not parallel: it sets the environment.
func TestMalformedEnvironmentIsRejected(t *testing.T) {
	t.Setenv("GASTOWN_TICK_WORKERS", "eight")
	t.Setenv("GASTOWN_ACTIVE_INTERVAL", "5")
	_, err := execute(context.Background(), "serve", "--admin-token", "x")
	require.ErrorContains(t, err, `GASTOWN_TICK_WORKERS="eight" is not a whole number (for --tick-workers)`)
	require.ErrorContains(t, err, `GASTOWN_ACTIVE_INTERVAL="5" is not a duration`)
	_, err = execute(context.Background(), "serve", "--admin-token", "x", "--tick-workers", "4", "--active-interval", "5s", "--no-api", "--no-workers")
	require.ErrorContains(t, err, "nothing to run", "the flags win over the environment")
	_, err = execute(context.Background(), "migrate", "--database-url", "postgres://postgres@127.0.0.1:1/gastown?connect_timeout=2")
	require.ErrorContains(t, err, "cannot reach PostgreSQL", "migrate has no --tick-workers")
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	url := dbtest.NewEmptyURL(t)
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := execute(context.Background(), "migrate", "--database-url", url); errs <- err }()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	_, err := execute(context.Background(), "migrate", "--database-url", url)
	require.NoError(t, err)
}

func TestDevClosesTheDemoBeads(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := execute(ctx, "dev", "--database-url", url, "--port", "0", "--exit-when-done",
		"--timeout", "80s", "--beads", "2", "--sim-work", "200ms", "--log-level", "error")
	require.NoError(t, err, out)
	require.Contains(t, out, "all 2 demo issues finished")
	require.Equal(t, 2, strings.Count(out, "in_review → closed"), out)
}

func TestGitHubTokensPerRepositoryAndOwner(t *testing.T) {
	t.Parallel()
	c := config{GitHubToken: "default", GitHubTokens: "acme=owner-tok, acme/web=repo-tok", GitHubAPIURL: "https://ghe.example.com/api/v3"}
	g := c.gitHub()
	require.Equal(t, "repo-tok", g.TokenFor("acme", "web"))
	require.Equal(t, "owner-tok", g.TokenFor("ACME", "api"))
	require.Equal(t, "default", g.TokenFor("other", "x"))
	require.Equal(t, "ghe.example.com", g.Host)
	require.Equal(t, "https://ghe.example.com/api/graphql", g.GraphQLURL)
}

// TestOperatorMistakesSayWhatToDo: bad arguments and flags get a message that says what
// is wanted, before anything is called or changed.
func TestOperatorMistakesSayWhatToDo(t *testing.T) {
	t.Parallel()
	town := "00000000-0000-0000-0000-000000000001"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--admin-token", "t"}, "name a town id (`gastown towns` lists them)"},
		{[]string{"status", "x?y=1", "--admin-token", "t"}, `"x?y=1" is not a town id`},
		{[]string{"towns", "--admin-token", "t", "--url", "127.0.0.1:8080"}, "must look like http://host:port"},
		{[]string{"replay", town, "--admin-token", "t", "--from-tick", "5"}, "need --faithful"},
		{[]string{"replay", town, "--admin-token", "t", "--faithful", "--from-tick", "abc"}, `--from-tick must be a whole number, not "abc"`},
		{[]string{"replay", town, "--admin-token", "t", "--faithful", "--from", "2026-01-01T00:00:00Z", "--from-tick", "3"}, "not both"},
		{[]string{"replay", town, "--admin-token", "t", "--faithful", "--what-if-config", "[1]"}, "must be a JSON object"},
		{[]string{"verify-history", "bad"}, `"bad" is not a town id`},
		{[]string{"verify-history", town, "--all"}, "not both"},
		{[]string{"verify-history", "--all", "--max-towns", "-1"}, "--max-towns must be at least 1"},
		{[]string{"bench", "--duration", "-1s", "--towns", "-5"}, "--duration must be positive; --towns must not be negative"},
		{[]string{"bench", "--duration", "soon"}, "--duration must be a duration such as 500ms"},
	} {
		_, err := execute(context.Background(), c.args...)
		require.ErrorContains(t, err, c.want, "%v", c.args)
	}
}

// TestHelpHidesSecrets: what the environment gives a token or a URL's password never
// shows in --help. Not parallel: it sets the environment.
func TestHelpHidesSecrets(t *testing.T) {
	t.Setenv("ADMIN_TOKEN", "s3cret-admin")
	t.Setenv("GITHUB_TOKEN", "s3cret-github")
	t.Setenv("GASTOWN_AGENT_TOKEN_SECRET", "s3cret-agents-0123456789")
	t.Setenv("SENTRY_DSN", "https://s3cret-key@o1.ingest.sentry.io/42")
	t.Setenv("GASTOWN_URL", "https://ops:s3cret-ops@gastown.example")
	for _, dsn := range []string{"postgres://u:s3cret-pw@db.example:5432/gastown", "postgres://db.example/gastown?password=s3cret-pw",
		"host=db.example password=s3cret-pw dbname=gastown"} {
		t.Setenv("DATABASE_URL", dsn)
		for _, cmd := range []string{"serve", "dev", "towns", "bench", "migrate"} {
			out, err := execute(context.Background(), cmd, "--help")
			require.NoError(t, err)
			require.NotContains(t, out, "s3cret", "%s --help with DATABASE_URL=%s", cmd, dsn)
		}
	}
}
