package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/codehost"
	"gastown/db"
	"gastown/reconciler"
)

// flakyServer is a local HTTP server standing for an agent runtime or a code host: it
// answers, fails with 503, or hangs until the caller gives up, as the test says.
type flakyServer struct {
	mode   atomic.Value // "ok", "fail", "hang"
	answer func(w http.ResponseWriter, r *http.Request)
	mu     sync.Mutex
	calls  map[string]int // by mode
}

func newFlakyServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) (*flakyServer, string) {
	f := &flakyServer{answer: answer, calls: map[string]int{}}
	f.mode.Store("ok")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.CloseClientConnections) // hung handlers end with their connections
	return f, srv.URL
}

func (f *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode := f.mode.Load().(string)
	f.mu.Lock()
	f.calls[mode]++
	if strings.HasSuffix(r.URL.Path, "/agents/start") {
		f.calls["start "+mode]++ // apart from the observer's status calls, which hang too
	}
	f.mu.Unlock()
	switch mode {
	case "hang":
		// The server notices a caller that gave up only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	case "fail":
		http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
	default:
		f.answer(w, r)
	}
}

func (f *flakyServer) count(mode string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[mode]
}

// counts copies the calls by mode.
func (f *flakyServer) counts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.calls)
}

// adapterTimeout is the runtime's and the code host's timeout in
// TestSlowAndFailingAdaptersNeverHoldATick, and the bound on a tick's duration there.
const adapterTimeout = 5 * time.Second

// TestSlowAndFailingAdaptersNeverHoldATick runs the workers (real River) against an agent
// runtime and a GitHub API on local HTTP servers that hang, fail with 503, then recover:
//   - hanging starts time out (adapterTimeout) and are reported as dispatch failures;
//     25 of them open the town's circuit breaker, which stops dispatch and tells the mayor;
//   - meanwhile ticks go on committing, each far shorter than the hang: no tick waits on
//     the network;
//   - once the failures leave the breaker's window (aged by 31 min), dispatch resumes past
//     the beads' backoff (the tick clock moved on); 503s are failures too and open it
//     again; then a healthy runtime starts them;
//   - PR polls against a hanging GitHub time out (adapterTimeout) and a 503 is a
//     transient poll failure, both reported as pr_poll_failed; a merged PR then closes the
//     MR and its issue.
func TestSlowAndFailingAdaptersNeverHoldATick(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	runtimeSrv, runtimeURL := newFlakyServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/status") {
			_, _ = w.Write([]byte(`{"status":"running"}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	var prState atomic.Value
	prState.Store(`{"state":"open","mergeable_state":"blocked","head":{"sha":"abc"}}`)
	githubSrv, githubURL := newFlakyServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(prState.Load().(string)))
	})
	rt, err := agentrt.NewHTTP(runtimeURL, "runtime-token", "http://127.0.0.1:1/api")
	require.NoError(t, err)
	gh := codehost.NewGitHub("gh-token")
	gh.APIURL, gh.GraphQLURL = githubURL, githubURL+"/graphql"

	var offset atomic.Int64 // how far the tick clock runs ahead of the wall clock
	b := setup(t, testOpts{workers: true, runtime: rt, codeHost: gh, cfg: Config{
		StartTimeout: adapterTimeout, CodeHostTimeout: adapterTimeout,
		ActiveInterval: 200 * time.Millisecond, SweepInterval: 200 * time.Millisecond,
	}})
	b.svc.Ticker.clock = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	townID, rigID := b.newTown(t)
	advance := func(d time.Duration) {
		offset.Add(int64(d))
		// Wake the town: an event starts a tick at once.
		_, err := b.svc.Events.Append(ctx, townID, db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}})
		require.NoError(t, err)
	}
	count := func(sql string, args ...any) int {
		var n int
		require.NoError(t, b.store.Pool.QueryRow(ctx, sql, args...).Scan(&n))
		return n
	}
	failures := func() int {
		return count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND event_type = 'agent_dispatch_failed' AND state = 'processed'`, townID)
	}
	// ageFailures moves the dispatch failures out of the breaker's 30-minute window (their
	// created_at is the database's clock; the tick clock only runs a few minutes ahead).
	ageFailures := func() {
		_, err := b.store.Pool.Exec(ctx, `UPDATE town_events SET created_at = created_at - interval '31 minutes'
			WHERE town_id = $1 AND event_type = 'agent_dispatch_failed'`, townID)
		require.NoError(t, err)
	}
	breakerNotices := func() int {
		return count(`SELECT count(*) FROM tick_inputs WHERE town_id = $1 AND actions::text LIKE '%circuit breaker is OPEN%'`, townID)
	}

	// passTime moves the tick clock on by step every 300 ms until done.
	passTime := func(what string, step time.Duration, done func() bool) {
		t.Helper()
		eventually(t, 30*time.Second, func() bool {
			if done() {
				return true
			}
			advance(step)
			time.Sleep(300 * time.Millisecond)
			return false
		}, what)
	}

	// 1. The runtime hangs: 25 issues are dispatched, their starts time out.
	runtimeSrv.mode.Store("hang")
	hangStarted := time.Now()
	issues := make([]db.NewEvent, 25)
	for i := range issues {
		issues[i] = beadCreated(rigID, "work")
	}
	_, err = b.svc.Events.Append(ctx, townID, issues...)
	require.NoError(t, err)
	// While the starts hang, facts still get applied at once: probes appended one after
	// another are each applied by a tick within a second.
	eventually(t, 10*time.Second, func() bool { return runtimeSrv.count("start hang") >= 20 }, "the starts are in flight")
	var slowestProbe time.Duration
	for range 5 {
		probe, err := b.svc.Events.Append(ctx, townID, db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}})
		require.NoError(t, err)
		sent := time.Now()
		eventually(t, 5*time.Second, func() bool {
			return count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND event_id = $2 AND state = 'processed'`, townID, probe[0].ID) == 1
		}, "a probe applied while the starts hang")
		slowestProbe = max(slowestProbe, time.Since(sent))
	}
	require.Less(t, slowestProbe, time.Second, "facts applied at once while the runtime hangs")
	require.Zero(t, failures(), "the probes were all applied before the starts timed out")
	eventually(t, 30*time.Second, func() bool { return failures() >= 20 }, "hung starts reported as failures")
	eventually(t, 10*time.Second, func() bool { return breakerNotices() > 0 }, "the circuit breaker opens and tells the mayor")
	var slowest time.Duration
	var during int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT coalesce(max(wall_clock_us), 0) * interval '1 microsecond', count(*)
		FROM reconciler_ticks WHERE town_id = $1 AND started_at >= $2`, townID, hangStarted.Add(time.Duration(offset.Load()))).Scan(&slowest, &during))
	require.GreaterOrEqual(t, during, 5, "ticks went on while the starts hung")
	// A tick that waited on a start would take at least the start's timeout; on a loaded
	// 2-core machine (make test runs the packages side by side) ticks have taken up to
	// 3.1 s without waiting on anything outside, so the timeout is 5 s and the bound is
	// the timeout itself.
	require.Less(t, slowest, adapterTimeout, "no tick waited on the hung runtime (start timeout)")
	// The open breaker holds dispatch back, even past the bead's backoff.
	hung := runtimeSrv.count("start hang")
	advance(2 * time.Minute)
	time.Sleep(time.Second)
	if got := runtimeSrv.count("start hang"); got != hung {
		// What tells a River retry (attempt > 1, the error that caused it) from a dispatch.
		var jobs string
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT string_agg(format('job %s attempt %s %s %s', id, attempt, state, errors), E'\n' ORDER BY id)
			FROM river_job WHERE kind = 'start_agent'`).Scan(&jobs))
		t.Fatalf("no start while the breaker is open: %d starts, %d before; start jobs:\n%s", got, hung, jobs)
	}

	// 2. The failures leave the window; the runtime answers 503: failures again, fast.
	runtimeSrv.mode.Store("fail")
	before, noticesBefore := failures(), breakerNotices()
	ageFailures()
	advance(2 * time.Minute) // past the first attempt's backoff (30 s)
	eventually(t, 30*time.Second, func() bool { return failures() >= before+20 }, "503s reported as dispatch failures")
	require.Positive(t, runtimeSrv.count("fail"))
	eventually(t, 10*time.Second, func() bool { return breakerNotices() > noticesBefore }, "the breaker opens again")

	// 3. The runtime recovers: past the window, the beads are started. The 503s' last
	// start jobs report first (a late report would count in the window again).
	eventually(t, 20*time.Second, func() bool {
		return count(`SELECT count(*) FROM river_job WHERE kind = 'start_agent' AND state NOT IN ('completed', 'discarded', 'cancelled')`) == 0 &&
			count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND state = 'pending'`, townID) == 0
	}, "the 503s' starts reported and applied")
	runtimeSrv.mode.Store("ok")
	ageFailures()
	var before3 int64
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT coalesce(max(tick_id), 0) FROM tick_inputs WHERE town_id = $1`, townID).Scan(&before3))
	advance(2 * time.Minute) // past the second attempt's backoff (1 min)
	// The clock stops as soon as a tick dispatches: moved on further while the start jobs
	// wait for a worker and report (slow under a loaded make test), the new agents would
	// look silent past A1's 90 s and be set idle, and their beads wait out a longer
	// backoff on a clock that no longer moves.
	passTime("dispatch resumes against a healthy runtime", 20*time.Second, func() bool {
		return count(`SELECT count(*) FROM tick_inputs WHERE town_id = $1 AND tick_id > $2 AND actions::text LIKE '%dispatch_agent%'`, townID, before3) > 0
	})
	eventually(t, 20*time.Second, func() bool {
		return count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND event_type = 'agent_dispatched' AND state = 'processed'`, townID) > 0
	}, "the start is reported and applied")

	// 4. A polecat finishes, its refinery opens a PR; GitHub hangs, then fails, then merges.
	// working waits for an agent of the role at work and returns it and its bead.
	working := func(role reconciler.AgentRole) (agent, bead string) {
		var seen []string
		for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(5 * time.Millisecond) {
			as, err := b.store.ListAgents(ctx, townID)
			require.NoError(t, err)
			seen = seen[:0]
			for _, a := range as {
				if a.Role == role && a.Status == reconciler.AgentWorking && a.HookBeadID != "" {
					return a.ID, a.HookBeadID
				}
				seen = append(seen, fmt.Sprintf("%s %s hook=%q", a.Role, a.Status, a.HookBeadID))
			}
		}
		var recent string
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT string_agg(format('%s %s %s %s', seq, event_type, state, left(payload::text, 120)), E'\n' ORDER BY seq)
			FROM (SELECT * FROM town_events WHERE town_id = $1 ORDER BY seq DESC LIMIT 40) e`, townID).Scan(&recent))
		var acts string
		require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT coalesce(string_agg(left(actions::text, 300), E'\n' ORDER BY tick_id), '')
			FROM (SELECT * FROM tick_inputs WHERE town_id = $1 ORDER BY tick_id DESC LIMIT 8) x`, townID).Scan(&acts))
		t.Fatalf("not within 20s: a %s at work; agents: %v\nlast events:\n%s\nlast ticks' actions:\n%s", role, seen, recent, acts)
		return "", ""
	}
	polecat, issue := working(reconciler.RolePolecat)
	_, err = b.svc.Events.Append(ctx, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: polecat, Payload: reconciler.AgentDonePayload{Branch: "gt/p/1"}})
	require.NoError(t, err)
	refinery, mr := working(reconciler.RoleRefinery)
	githubSrv.mode.Store("hang")
	url := "https://github.com/o/r/pull/5"
	_, err = b.svc.Events.Append(ctx, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: refinery, Payload: reconciler.AgentDonePayload{Branch: "gt/p/1", PRURL: url}})
	require.NoError(t, err)
	pollFailures := func(kind string) int {
		return count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND event_type = 'pr_poll_failed' AND payload ->> 'kind' = $2`, townID, kind)
	}
	pollUntil := func(what string, done func() bool) {
		t.Helper()
		passTime(what, 61*time.Second, done) // past the poll interval
	}
	hangStarted = time.Now()
	pollUntil("a hung poll times out and is reported", func() bool { return githubSrv.count("hang") > 0 && pollFailures("http_error") > 0 })
	githubSrv.mode.Store("fail")
	hungFailures := pollFailures("http_error")
	pollUntil("a 503 is reported as a transient poll failure", func() bool {
		return count(`SELECT count(*) FROM town_events WHERE town_id = $1 AND event_type = 'pr_poll_failed'
			AND (payload ->> 'http_status')::int = 503 AND (payload ->> 'transient')::boolean`, townID) > 0
	})
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT coalesce(max(wall_clock_us), 0) * interval '1 microsecond' FROM reconciler_ticks
		WHERE town_id = $1 AND started_at >= $2`, townID, hangStarted).Scan(&slowest))
	require.Less(t, slowest, adapterTimeout, "no tick waited on the hung code host (its timeout; see above)")
	prState.Store(`{"state":"closed","merged":true,"head":{"sha":"abc"}}`)
	githubSrv.mode.Store("ok")
	pollUntil("the merged PR closes the MR and its issue", func() bool {
		m, err := b.store.GetBead(ctx, townID, mr)
		require.NoError(t, err)
		i, err := b.store.GetBead(ctx, townID, issue)
		require.NoError(t, err)
		return m.Status == reconciler.StatusClosed && i.Status == reconciler.StatusClosed
	})
	require.Zero(t, count(`SELECT count(*) FROM town_events WHERE state = 'dead'`))
	stats, _ := json.Marshal(map[string]any{"runtime_calls": runtimeSrv.counts(), "github_calls": githubSrv.counts(),
		"dispatch_failures": failures(), "breaker_notices": breakerNotices(), "poll_timeouts": hungFailures})
	t.Logf("adapters: %s; while the runtime hung, probes applied within %s; slowest tick while GitHub hung %s", stats, slowestProbe, slowest)
}
