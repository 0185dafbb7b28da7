package jobs

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/obs"
	"gastown/reconciler"
)

// A persisting violation reaches Sentry once, through real ticks and a real HTTP client
// pointed at a local server, not on every tick.
func TestPersistingViolationIsReportedOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var envelopes []string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		envelopes = append(envelopes, string(b))
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	sentry, err := obs.NewSentry("http://key@"+strings.TrimPrefix(srv.URL, "http://")+"/1", "test", "r", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)

	s := newScenario(t, reconciler.TownConfig{})
	s.svc.Ticker.reporter = sentry
	issue := s.issue(t)
	s.tick(t)
	// An issue in review with no MR: invariant #4, for as long as B4 waits (5 min).
	s.exec(t, `UPDATE beads SET status = 'in_review', updated_at = $2 WHERE bead_id = $1`, issue, s.clk.now())
	for range 3 {
		res := s.tick(t)
		s.svc.report(s.townID, res)
		s.clk.add(5 * time.Second)
	}
	sentry.Flush(5 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, e := range envelopes {
		if strings.Contains(e, "Reconciler invariant #4 violated") {
			n++
			require.Contains(t, e, `"invariant":"4"`)
			require.Contains(t, e, `"town_id":"`+s.townID+`"`)
		}
	}
	require.Equal(t, 1, n, "reported when it started, not on every tick")
}
