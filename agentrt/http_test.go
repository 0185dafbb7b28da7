package agentrt

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeRuntime is a local agent runtime server following docs/agent-runtime.md.
type fakeRuntime struct {
	mu      sync.Mutex
	starts  []StartRequest
	answers map[string]func(w http.ResponseWriter) // by path suffix
	auth    []string
}

func (f *fakeRuntime) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	for suffix, answer := range f.answers {
		if strings.HasSuffix(r.URL.Path, suffix) {
			f.mu.Unlock()
			answer(w)
			return
		}
	}
	f.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/agents/start"):
		var req StartRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.starts = append(f.starts, req)
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	case strings.HasSuffix(r.URL.Path, "/status"):
		_, _ = w.Write([]byte(`{"status":"running"}`))
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func (f *fakeRuntime) answer(suffix string, fn func(w http.ResponseWriter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[suffix] = fn
}

func newFake(t *testing.T) (*fakeRuntime, *HTTP) {
	t.Helper()
	f := &fakeRuntime{answers: map[string]func(http.ResponseWriter){}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	h, err := NewHTTP(srv.URL, "runtime-token", "http://gastown.example/api")
	require.NoError(t, err)
	return f, h
}

func TestHTTPRuntimeStart(t *testing.T) {
	t.Parallel()
	f, h := newFake(t)
	ctx := context.Background()
	req := StartRequest{TownID: "t1", AgentID: "a1", Role: "polecat", BeadID: "b1", Token: "agent-token"}
	require.NoError(t, h.StartAgent(ctx, req))
	require.Len(t, f.starts, 1)
	require.Equal(t, "http://gastown.example/api", f.starts[0].CallbackURL, "the callback URL is filled in")
	require.Equal(t, "agent-token", f.starts[0].Token)
	require.Equal(t, "Bearer runtime-token", f.auth[0])

	f.answer("/agents/start", func(w http.ResponseWriter) {
		http.Error(w, "agent a1 is already running", http.StatusInternalServerError)
	})
	require.NoError(t, h.StartAgent(ctx, req), "already running counts as started")

	f.answer("/agents/start", func(w http.ResponseWriter) { http.Error(w, "no such role", http.StatusBadRequest) })
	err := h.StartAgent(ctx, req)
	require.True(t, IsPermanent(err), "%v", err)

	f.answer("/agents/start", func(w http.ResponseWriter) { http.Error(w, "overloaded", http.StatusServiceUnavailable) })
	err = h.StartAgent(ctx, req)
	var te *TransientError
	require.ErrorAs(t, err, &te)

	f.answer("/agents/start", func(http.ResponseWriter) { time.Sleep(300 * time.Millisecond) })
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorAs(t, h.StartAgent(short, req), &te, "a timeout is transient")
}

// TestHTTPRuntimeStartRunsToItsDeadline: a start takes as long as its context allows (the
// start job's --start-timeout), even past the default bound of a start without a deadline.
// Not parallel: it shortens that default.
func TestHTTPRuntimeStartRunsToItsDeadline(t *testing.T) {
	saved := startTimeout
	startTimeout = 50 * time.Millisecond
	t.Cleanup(func() { startTimeout = saved })
	f, h := newFake(t)
	f.answer("/agents/start", func(w http.ResponseWriter) { time.Sleep(200 * time.Millisecond); w.WriteHeader(http.StatusAccepted) })
	req := StartRequest{TownID: "t1", AgentID: "a1", Role: "polecat", BeadID: "b1"}

	var te *TransientError
	require.ErrorAs(t, h.StartAgent(context.Background(), req), &te, "without a deadline the default bound cuts the start")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.StartAgent(ctx, req), "with a deadline the start runs until it")
}

func TestHTTPRuntimeStatusMapping(t *testing.T) {
	t.Parallel()
	f, h := newFake(t)
	ctx := context.Background()
	require.Equal(t, "running", h.Status(ctx, "t", "a"))
	for _, c := range []struct {
		answer func(http.ResponseWriter)
		want   string
	}{
		{func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"status":"exited"}`)) }, "exited"},
		{func(w http.ResponseWriter) { http.NotFound(w, nil) }, "not_found"},
		{func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) }, "unknown"},
		{func(w http.ResponseWriter) { _, _ = w.Write([]byte(`not json`)) }, "unknown"},
		{func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{}`)) }, "unknown"},
	} {
		f.answer("/status", c.answer)
		require.Equal(t, c.want, h.Status(ctx, "t", "a"))
	}
}

func TestHTTPRuntimeStopMessageHealth(t *testing.T) {
	t.Parallel()
	f, h := newFake(t)
	ctx := context.Background()
	require.NoError(t, h.StopAgent(ctx, "t", "a"))
	f.answer("/stop", func(w http.ResponseWriter) { http.NotFound(w, nil) })
	require.NoError(t, h.StopAgent(ctx, "t", "a"), "an unknown agent is stopped already")
	require.NoError(t, h.SendMessage(ctx, "t", "a", "hi"))
	f.answer("/message", func(w http.ResponseWriter) { http.Error(w, "agent not running", http.StatusConflict) })
	require.True(t, IsPermanent(h.SendMessage(ctx, "t", "a", "hi")))
	require.NoError(t, h.Health(ctx))
	_, err := NewHTTP("ftp://nope", "", "")
	require.Error(t, err)
}
