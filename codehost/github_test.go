package codehost

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeGitHub serves the parts of GitHub's REST and GraphQL APIs the adapter uses, with
// realistic bodies; tests change its answers.
type fakeGitHub struct {
	mu          sync.Mutex
	pull        string // body of GET /pulls/{n}
	pullStatus  int
	pullHeaders map[string]string
	graphql     string
	checks      string
	mergeStatus int
	merges      int
	tokens      []string
}

const (
	pullOpenClean = `{"url":"https://api.github.com/repos/o/r/pulls/7","number":7,"state":"open","merged":false,
		"mergeable":true,"mergeable_state":"clean","draft":false,"head":{"ref":"gt/toast/1","sha":"abc123"},
		"base":{"ref":"main"},"requested_reviewers":[]}`
	graphqlApproved = `{"data":{"repository":{"pullRequest":{"reviewDecision":"APPROVED","isDraft":false,
		"reviewThreads":{"nodes":[{"isResolved":true},{"isResolved":true}]}}}}}`
	checksGreen = `{"total_count":2,"check_runs":[{"name":"build","status":"completed","conclusion":"success"},
		{"name":"lint","status":"completed","conclusion":"skipped"}]}`
)

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, r.Header.Get("Authorization"))
	switch {
	case r.URL.Path == "/graphql":
		body, _ := io.ReadAll(r.Body)
		var q struct {
			Variables map[string]any `json:"variables"`
		}
		if json.Unmarshal(body, &q) != nil || q.Variables["number"] != float64(7) {
			http.Error(w, `{"message":"bad graphql request"}`, http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(f.graphql))
	case strings.HasSuffix(r.URL.Path, "/check-runs"):
		if !strings.Contains(r.URL.Path, "/commits/abc123/") {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(f.checks))
	case strings.HasSuffix(r.URL.Path, "/pulls/7/merge") && r.Method == http.MethodPut:
		if f.mergeStatus != 0 {
			w.WriteHeader(f.mergeStatus)
			_, _ = w.Write([]byte(`{"message":"Pull Request is not mergeable"}`))
			return
		}
		f.merges++
		_, _ = w.Write([]byte(`{"sha":"def456","merged":true,"message":"Pull Request successfully merged"}`))
	case r.URL.Path == "/repos/o/r/pulls/7":
		for k, v := range f.pullHeaders {
			w.Header().Set(k, v)
		}
		if f.pullStatus != 0 {
			w.WriteHeader(f.pullStatus)
		}
		_, _ = w.Write([]byte(f.pull))
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}`))
	}
}

func (f *fakeGitHub) set(fn func(f *fakeGitHub)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func newGitHub(t *testing.T) (*fakeGitHub, *GitHub) {
	t.Helper()
	f := &fakeGitHub{pull: pullOpenClean, graphql: graphqlApproved, checks: checksGreen}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	g := NewGitHub("ghp_test")
	g.APIURL, g.GraphQLURL = srv.URL, srv.URL+"/graphql"
	return f, g
}

const prURL = "https://github.com/o/r/pull/7"

func kindOf(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	require.ErrorAs(t, err, &e)
	return e
}

func TestGitHubStatus(t *testing.T) {
	t.Parallel()
	f, g := newGitHub(t)
	ctx := context.Background()
	st, err := g.PRStatus(ctx, prURL)
	require.NoError(t, err)
	require.Equal(t, PRStatus{State: "open", MergeableState: "clean"}, st)
	require.Equal(t, "Bearer ghp_test", f.tokens[0])

	f.set(func(f *fakeGitHub) {
		f.pull = strings.Replace(pullOpenClean, `"state":"open","merged":false`, `"state":"closed","merged":true`, 1)
	})
	st, err = g.PRStatus(ctx, prURL)
	require.NoError(t, err)
	require.Equal(t, "merged", st.State)
	f.set(func(f *fakeGitHub) { f.pull = strings.Replace(pullOpenClean, `"state":"open"`, `"state":"closed"`, 1) })
	st, err = g.PRStatus(ctx, prURL)
	require.NoError(t, err)
	require.Equal(t, "closed", st.State)
	f.set(func(f *fakeGitHub) { f.pull = strings.Replace(pullOpenClean, `"clean"`, `"dirty"`, 1) })
	st, err = g.PRStatus(ctx, prURL)
	require.NoError(t, err)
	require.Equal(t, "dirty", st.MergeableState)
}

func TestGitHubErrorKinds(t *testing.T) {
	t.Parallel()
	f, g := newGitHub(t)
	ctx := context.Background()

	_, err := g.PRStatus(ctx, "https://example.com/o/r/issues/7")
	require.Equal(t, KindUnrecognizedURL, kindOf(t, err).Kind)
	_, err = g.PRStatus(ctx, "https://gitlab.com/o/r/pull/7")
	require.Equal(t, KindHostMismatch, kindOf(t, err).Kind)
	noToken := NewGitHub("")
	_, err = noToken.PRStatus(ctx, prURL)
	require.Equal(t, KindNoToken, kindOf(t, err).Kind)

	cases := []struct {
		status    int
		headers   map[string]string
		body      string
		transient bool
	}{
		{http.StatusNotFound, nil, `{"message":"Not Found"}`, false},
		{http.StatusUnauthorized, nil, `{"message":"Bad credentials"}`, false},
		{http.StatusForbidden, nil, `{"message":"Resource not accessible by integration"}`, false},
		{http.StatusForbidden, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1893456000"}, `{"message":"API rate limit exceeded"}`, true},
		{http.StatusTooManyRequests, map[string]string{"Retry-After": "30"}, `{"message":"secondary rate limit"}`, true},
		{http.StatusBadGateway, nil, `<html>bad gateway</html>`, true},
	}
	for _, c := range cases {
		f.set(func(f *fakeGitHub) { f.pullStatus, f.pullHeaders, f.pull = c.status, c.headers, c.body })
		_, err := g.PRStatus(ctx, prURL)
		e := kindOf(t, err)
		require.Equal(t, KindHTTPError, e.Kind, "%d", c.status)
		require.Equal(t, c.status, e.HTTPStatus)
		require.Equal(t, c.transient, e.Transient, "%d %v", c.status, c.headers)
		require.Equal(t, c.transient, IsTransient(err))
	}
	e := kindOf(t, func() error {
		f.set(func(f *fakeGitHub) { f.pullStatus, f.pullHeaders, f.pull = 0, nil, `{"message":"rate"}` })
		_, err := g.PRStatus(ctx, prURL)
		return err
	}())
	require.Equal(t, KindInvalidResponse, e.Kind, "an answer without a state")
	f.set(func(f *fakeGitHub) { f.pull = `{"state": "open", ` })
	_, err = g.PRStatus(ctx, prURL)
	require.Equal(t, KindInvalidResponse, kindOf(t, err).Kind, "malformed JSON")
	f.set(func(f *fakeGitHub) { f.pull = strings.Replace(pullOpenClean, `"state":"open"`, `"state":"weird"`, 1) })
	_, err = g.PRStatus(ctx, prURL)
	require.Equal(t, KindInvalidResponse, kindOf(t, err).Kind)
}

func TestGitHubFeedback(t *testing.T) {
	t.Parallel()
	f, g := newGitHub(t)
	ctx := context.Background()
	fb, err := g.PRFeedback(ctx, prURL)
	require.NoError(t, err)
	require.True(t, fb.Green(), "%+v", fb)
	require.Equal(t, "APPROVED", fb.ReviewDecision)

	f.set(func(f *fakeGitHub) {
		f.graphql = `{"data":{"repository":{"pullRequest":{"reviewDecision":"CHANGES_REQUESTED","isDraft":true,
			"reviewThreads":{"nodes":[{"isResolved":true},{"isResolved":false}]}}}}}`
		f.checks = `{"total_count":3,"check_runs":[{"status":"completed","conclusion":"failure"},
			{"status":"in_progress","conclusion":null},{"status":"completed","conclusion":"success"}]}`
		f.pull = strings.Replace(pullOpenClean, `"requested_reviewers":[]`, `"requested_reviewers":[{"login":"octocat"}]`, 1)
	})
	fb, err = g.PRFeedback(ctx, prURL)
	require.NoError(t, err)
	require.True(t, fb.HasUnresolvedComments)
	require.True(t, fb.HasFailingChecks)
	require.True(t, fb.HasUncheckedRuns)
	require.False(t, fb.AllChecksPass)
	require.True(t, fb.ChangesRequested)
	require.True(t, fb.AwaitingApproval)
	require.True(t, fb.IsDraft)
	require.False(t, fb.Green())

	f.set(func(f *fakeGitHub) { f.graphql = `{"errors":[{"message":"Could not resolve to a PullRequest"}]}` })
	_, err = g.PRFeedback(ctx, prURL)
	require.Equal(t, KindInvalidResponse, kindOf(t, err).Kind)
	f.set(func(f *fakeGitHub) { f.graphql, f.checks = graphqlApproved, `{"total_count":0}` })
	_, err = g.PRFeedback(ctx, prURL)
	require.Equal(t, KindInvalidResponse, kindOf(t, err).Kind, "check runs missing")
}

func TestGitHubMerge(t *testing.T) {
	t.Parallel()
	f, g := newGitHub(t)
	ctx := context.Background()
	require.NoError(t, g.MergePR(ctx, prURL))
	require.Equal(t, 1, f.merges)
	for _, status := range []int{http.StatusMethodNotAllowed, http.StatusConflict} {
		f.set(func(f *fakeGitHub) { f.mergeStatus = status })
		require.True(t, errors.Is(g.MergePR(ctx, prURL), ErrNotMergeable), "%d", status)
	}
	f.set(func(f *fakeGitHub) { f.mergeStatus = http.StatusInternalServerError })
	require.True(t, IsTransient(g.MergePR(ctx, prURL)))
}
