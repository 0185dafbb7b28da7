package obs

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// fakeSentry is a local HTTP server that accepts Sentry envelopes.
type fakeSentry struct {
	mu     sync.Mutex
	bodies []string
}

func (f *fakeSentry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, string(b))
	f.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (f *fakeSentry) all() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.bodies, "\n")
}

func TestReportsReachSentryOverHTTP(t *testing.T) {
	t.Parallel()
	fake := &fakeSentry{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	dsn := "http://publickey@" + strings.TrimPrefix(srv.URL, "http://") + "/42"
	s, err := NewSentry(dsn, "test-env", "gastown@abc", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)

	s.InvariantViolated("town-1", reconciler.Violation{Invariant: 7, SubjectID: "a", Message: "Working agent a has no hook"})
	s.EventDead("town-2", db.EventFailure{Event: db.Event{Seq: 9, Type: "agent_done"}, Err: errors.New("boom"), Dead: true})
	s.Flush(5 * time.Second)

	got := fake.all()
	require.Contains(t, got, "Reconciler invariant #7 violated: Working agent a has no hook")
	require.Contains(t, got, `"invariant":"7"`)
	require.Contains(t, got, `"town_id":"town-1"`)
	require.Contains(t, got, `"level":"error"`)
	require.Contains(t, got, "Town event agent_done (seq 9) is dead: boom")
	require.Contains(t, got, `"town_id":"town-2"`)
	require.Contains(t, got, `"environment":"test-env"`)
	require.Contains(t, got, `"release":"gastown@abc"`)
}

func TestNoDSNOnlyLogs(t *testing.T) {
	t.Parallel()
	s, err := NewSentry("", "test", "r", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	s.InvariantViolated("t", reconciler.Violation{Invariant: 3})
	s.Flush(time.Millisecond)
}
