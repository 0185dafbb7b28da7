package obs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"gastown/db/dbtest"
)

func TestMetricsExposeTicksPoolAndQueues(t *testing.T) {
	t.Parallel()
	pool := dbtest.NewPool(t)
	_, err := pool.Exec(context.Background(), `INSERT INTO river_job (kind, args, queue, state, max_attempts, scheduled_at)
		VALUES ('tick_town', '{}', 'ticks', 'available', 1, now())`)
	require.NoError(t, err)
	m := NewMetrics(pool)
	m.TickObserved(3*time.Millisecond, time.Millisecond, time.Millisecond, 500*time.Microsecond, 500*time.Microsecond)
	m.TickOutcome("busy")
	m.EventsDrained(5, 1, 1)
	m.Actions(map[string]int{"dispatch_agent": 2}, map[string]int{"dispatch_agent": 1})
	m.SideEffect("start_agent", "requested")
	m.ViolationStarted("7")

	require.InDelta(t, 5.0, testutil.ToFloat64(m.events.WithLabelValues("applied")), 0)
	require.InDelta(t, 1.0, testutil.ToFloat64(m.ticks.WithLabelValues("busy")), 0)
	require.InDelta(t, 1.0, testutil.ToFloat64(m.skipped.WithLabelValues("dispatch_agent")), 0)
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	var text strings.Builder
	for _, f := range families {
		names[f.GetName()] = true
		text.WriteString(f.String())
	}
	for _, want := range []string{"gastown_tick_duration_seconds", "gastown_ticks_total", "gastown_events_total", "gastown_actions_total",
		"gastown_actions_skipped_total", "gastown_side_effects_total", "gastown_invariant_violations_started_total",
		"gastown_db_pool_connections", "gastown_river_jobs", "go_goroutines"} {
		require.True(t, names[want], want)
	}
	require.Contains(t, text.String(), `value:"ticks"`, "River queue depth by queue")
}
