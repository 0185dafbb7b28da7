package jobs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/reconciler"
)

// The container observation asks a runtime over real HTTP and records only non-running
// statuses; the tick then applies them.
func TestObserveAgentsRecordsNonRunningStatuses(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	status := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/") // /towns/{town}/agents/{agent}/status
		mu.Lock()
		st := status[parts[4]]
		mu.Unlock()
		if st == "" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"status":"` + st + `"}`))
	}))
	t.Cleanup(srv.Close)
	rt, err := agentrt.NewHTTP(srv.URL, "", "")
	require.NoError(t, err)

	s := newScenario(t, reconciler.TownConfig{})
	s.svc.runtime = rt
	ctx := context.Background()
	_, p := s.dispatched(t)

	mu.Lock()
	status[p] = "running"
	mu.Unlock()
	n, err := s.svc.ObserveAgents(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "running is never recorded")

	mu.Lock()
	status[p] = "exited"
	mu.Unlock()
	n, err = s.svc.ObserveAgents(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = s.svc.ObserveAgents(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "the same pending status is not recorded twice")

	res := s.tick(t)
	require.Equal(t, 1, res.Drain.Applied)
	require.NotEqual(t, reconciler.AgentWorking, s.agent(t, p).Status, "the exited agent is no longer working")
}
