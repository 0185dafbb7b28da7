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
