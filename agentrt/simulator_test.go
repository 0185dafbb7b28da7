package agentrt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/reconciler"
)

// recorder is a Reporter that remembers what agents reported.
type recorder struct {
	mu         sync.Mutex
	heartbeats []Activity
	done       []reconciler.AgentDonePayload
	completed  []reconciler.AgentCompletedPayload
}

func (r *recorder) Heartbeat(_ context.Context, _, _ string, a Activity) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heartbeats = append(r.heartbeats, a)
	return nil
}

func (r *recorder) Done(_ context.Context, _, _ string, p reconciler.AgentDonePayload) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = append(r.done, p)
	return nil
}

func (r *recorder) Completed(_ context.Context, _, _ string, p reconciler.AgentCompletedPayload) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completed = append(r.completed, p)
	return nil
}

func (r *recorder) snapshot() (hb []Activity, done []reconciler.AgentDonePayload, completed []reconciler.AgentCompletedPayload) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Activity(nil), r.heartbeats...), append([]reconciler.AgentDonePayload(nil), r.done...), append([]reconciler.AgentCompletedPayload(nil), r.completed...)
}

type prHost struct {
	mu           sync.Mutex
	opened, fixd []string
}

func (h *prHost) OpenPR(u string) { h.mu.Lock(); h.opened = append(h.opened, u); h.mu.Unlock() }
func (h *prHost) FixPR(u string)  { h.mu.Lock(); h.fixd = append(h.fixd, u); h.mu.Unlock() }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newSim(t *testing.T, cfg SimConfig) (*Simulator, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg.HeartbeatInterval, cfg.WorkMin, cfg.WorkMax = 5*time.Millisecond, 30*time.Millisecond, 30*time.Millisecond
	s := NewSimulator(cfg, rec, quiet)
	t.Cleanup(s.Close)
	return s, rec
}

func TestSimulatedAgentFinishesWithABranch(t *testing.T) {
	t.Parallel()
	s, rec := newSim(t, SimConfig{})
	require.NoError(t, s.StartAgent(context.Background(), StartRequest{TownID: "t", AgentID: "a", AgentName: "Toast", Role: reconciler.RolePolecat, BeadID: "0123456789ab"}))
	require.Eventually(t, func() bool { _, _, c := rec.snapshot(); return len(c) == 1 }, 5*time.Second, 5*time.Millisecond)
	hb, done, completed := rec.snapshot()
	require.Equal(t, []reconciler.AgentDonePayload{{Branch: "gt/toast/01234567", Summary: "simulated work on "}}, done)
	require.Equal(t, "completed", completed[0].Status)
	require.NotEmpty(t, hb)
	require.Equal(t, "exited", s.Status(context.Background(), "t", "a"))
}

// A hung agent keeps heartbeating with a frozen activity watermark (so GUPP sees it idle)
// until a message wakes it; then it finishes.
func TestSimulatedHungAgentWakesOnANudge(t *testing.T) {
	t.Parallel()
	s, rec := newSim(t, SimConfig{HangProb: 1})
	ctx := context.Background()
	require.NoError(t, s.StartAgent(ctx, StartRequest{TownID: "t", AgentID: "a", AgentName: "Toast", Role: reconciler.RolePolecat, BeadID: "b"}))
	time.Sleep(150 * time.Millisecond) // well past its work time: it hung
	hb, done, _ := rec.snapshot()
	require.Empty(t, done)
	require.Greater(t, len(hb), 5)
	frozen := hb[len(hb)-1].LastEventAt
	require.Equal(t, frozen, hb[len(hb)-3].LastEventAt, "heartbeats continue, the activity watermark does not move")
	require.Less(t, time.Since(frozen), time.Second)
	require.Equal(t, "running", s.Status(ctx, "t", "a"))

	require.NoError(t, s.SendMessage(ctx, "t", "a", "You have been idle for 20 seconds"))
	require.Eventually(t, func() bool { _, d, _ := rec.snapshot(); return len(d) == 1 }, 5*time.Second, 5*time.Millisecond)
	hb, _, _ = rec.snapshot()
	require.True(t, hb[len(hb)-1].LastEventAt.After(frozen), "woken, its activity moves again")
	require.Equal(t, 1, s.Messages())
}

func TestSimulatedSilentAndCrashingAgents(t *testing.T) {
	t.Parallel()
	s, rec := newSim(t, SimConfig{SilentProb: 1})
	ctx := context.Background()
	require.NoError(t, s.StartAgent(ctx, StartRequest{TownID: "t", AgentID: "a", Role: reconciler.RolePolecat}))
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, s.SendMessage(ctx, "t", "a", "hello?"))
	time.Sleep(100 * time.Millisecond)
	hb, done, _ := rec.snapshot()
	require.Len(t, hb, 1, "only the heartbeat at start")
	require.Empty(t, done, "a silent agent does not answer nudges")
	require.NoError(t, s.StopAgent(ctx, "t", "a"))
	require.Eventually(t, func() bool { return s.Status(ctx, "t", "a") == "exited" }, 5*time.Second, 5*time.Millisecond)
	require.Error(t, s.SendMessage(ctx, "t", "a", "gone"))

	s, rec = newSim(t, SimConfig{CrashProb: 1})
	require.NoError(t, s.StartAgent(ctx, StartRequest{TownID: "t", AgentID: "a", Role: reconciler.RolePolecat}))
	require.Eventually(t, func() bool { _, _, c := rec.snapshot(); return len(c) == 1 }, 5*time.Second, 5*time.Millisecond)
	_, done, completed := rec.snapshot()
	require.Empty(t, done)
	require.Equal(t, reconciler.AgentCompletedPayload{Status: "failed", Reason: "simulated crash"}, completed[0], "no bead: the start named none")
}

// A refinery in a PR town opens a PR; a polecat on a PR fix-up pushes to the PR's branch
// and fixes it on the host.
func TestSimulatedAgentsOpenAndFixPRs(t *testing.T) {
	t.Parallel()
	host := &prHost{}
	s, rec := newSim(t, SimConfig{PRHost: host})
	ctx := context.Background()
	require.NoError(t, s.StartAgent(ctx, StartRequest{TownID: "t", AgentID: "r", Role: reconciler.RoleRefinery, Branch: "gt/toast/x",
		MergeStrategy: reconciler.MergeStrategyPR, GitURL: "https://github.com/acme/app.git"}))
	require.Eventually(t, func() bool { _, d, _ := rec.snapshot(); return len(d) == 1 }, 5*time.Second, 5*time.Millisecond)
	_, done, _ := rec.snapshot()
	require.Equal(t, "gt/toast/x", done[0].Branch)
	require.Equal(t, "https://github.com/acme/app/pull/1", done[0].PRURL)
	require.Equal(t, []string{done[0].PRURL}, host.opened)

	require.NoError(t, s.StartAgent(ctx, StartRequest{TownID: "t", AgentID: "p", Role: reconciler.RolePolecat, PRURL: done[0].PRURL, Branch: "gt/toast/x"}))
	require.Eventually(t, func() bool { _, d, _ := rec.snapshot(); return len(d) == 2 }, 5*time.Second, 5*time.Millisecond)
	_, done, _ = rec.snapshot()
	require.Equal(t, "gt/toast/x", done[1].Branch, "the fix goes to the PR's branch")
	require.Empty(t, done[1].PRURL)
	require.Equal(t, []string{done[0].PRURL}, host.fixd)
}

// outcomes records each agent's last report.
type outcomes struct {
	mu   sync.Mutex
	last map[string]string
}

func (o *outcomes) Heartbeat(context.Context, string, string, Activity) error { return nil }
func (o *outcomes) Done(_ context.Context, _, agent string, p reconciler.AgentDonePayload) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.last[agent] = "done " + p.PRURL
	return nil
}
func (o *outcomes) Completed(_ context.Context, _, agent string, p reconciler.AgentCompletedPayload) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p.Status == "failed" {
		o.last[agent] = "crashed"
	}
	return nil
}

// The same seed gives every run the same fate whatever order the starts arrive in (ticks
// of several towns interleave differently from one run to the next).
func TestSimulatorSeedIsReproducibleAcrossStartOrders(t *testing.T) {
	t.Parallel()
	run := func(order []int) map[string]string {
		o := &outcomes{last: map[string]string{}}
		s := NewSimulator(SimConfig{Seed: 9, CrashProb: 0.5, HeartbeatInterval: time.Second, WorkMin: time.Millisecond, WorkMax: 5 * time.Millisecond}, o, quiet)
		defer s.Close()
		for _, i := range order {
			require.NoError(t, s.StartAgent(context.Background(), StartRequest{TownID: "t", AgentID: fmt.Sprint("a", i), Role: reconciler.RoleRefinery,
				BeadTitle: fmt.Sprint("bead ", i), GitURL: fmt.Sprint("https://github.com/acme/r", i%2), MergeStrategy: reconciler.MergeStrategyPR}))
		}
		require.Eventually(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.last) == len(order) }, 5*time.Second, time.Millisecond)
		return o.last
	}
	forward := run([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	backward := run([]int{9, 8, 7, 6, 5, 4, 3, 2, 1, 0})
	crashed := 0
	for a, v := range forward {
		require.Equal(t, v == "crashed", backward[a] == "crashed", a)
		if v == "crashed" {
			crashed++
		}
	}
	require.Positive(t, crashed)
	require.Less(t, crashed, 10)
}
