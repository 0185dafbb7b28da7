package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/agenttoken"
	"gastown/db"
	"gastown/db/dbtest"
	"gastown/jobs"
	"gastown/reconciler"
)

const token = "test-token"

type testBundle struct {
	store   *db.Store
	svc     *jobs.Service
	server  *httptest.Server
	handler http.Handler
	signer  *agenttoken.Signer
}

type nopReporter struct{}

func (nopReporter) Heartbeat(context.Context, string, string, agentrt.Activity) error { return nil }
func (nopReporter) Done(context.Context, string, string, reconciler.AgentDonePayload) error {
	return nil
}
func (nopReporter) Completed(context.Context, string, string, reconciler.AgentCompletedPayload) error {
	return nil
}

func setup(t testing.TB) *testBundle {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := dbtest.NewStore(t)
	sim := agentrt.NewSimulator(agentrt.SimConfig{}, nopReporter{}, logger)
	t.Cleanup(sim.Close)
	// No workers: nothing ticks unless the test says so.
	svc, err := jobs.New(jobs.Deps{Store: store, Runtime: sim, Logger: logger}, jobs.Config{}, false)
	require.NoError(t, err)
	signer, err := agenttoken.NewSigner("test-agent-token-secret")
	require.NoError(t, err)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("# metrics\n")) })
	api, err := New(Config{AdminTokens: []string{"old-token", token}, AgentTokens: signer, MaxBodyBytes: 64 << 10, Metrics: metrics}, store, svc, logger)
	require.NoError(t, err)
	uiCtx, stopUI := context.WithCancel(context.Background())
	t.Cleanup(stopUI)
	require.NoError(t, api.Start(uiCtx))
	handler := api.Handler()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &testBundle{store: store, svc: svc, server: srv, handler: handler, signer: signer}
}

func (b *testBundle) do(t testing.TB, method, path, auth string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.server.URL+path, rd)
	require.NoError(t, err)
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, &out), string(raw))
	}
	return resp.StatusCode, out
}

func (b *testBundle) tick(t testing.TB, townID string) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = b.svc.Ticker.Tick(ctx, tx, townID, jobs.TickOptions{})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.do(t, http.MethodGet, "/v1/towns", "", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, body["error"], "bearer")
	status, _ = b.do(t, http.MethodGet, "/v1/towns", "wrong", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	status, _ = b.do(t, http.MethodPost, "/debug/towns/"+db.NewID()+"/reconcile-dry-run", "", nil)
	require.Equal(t, http.StatusUnauthorized, status, "debug endpoints are authenticated")
	for _, tok := range []string{token, "old-token"} { // rotation: both are valid
		status, _ = b.do(t, http.MethodGet, "/v1/towns", tok, nil)
		require.Equal(t, http.StatusOK, status)
	}
	resp, err := http.Get(b.server.URL + "/metrics")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "metrics are behind the admin token")
}

func TestBadInputIsA4xxAndChangesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": ""})
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "name is required", body["error"])
	status, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	require.Equal(t, http.StatusCreated, status)
	townID := town["town_id"].(string)

	cases := []struct {
		path string
		body any
		want string
	}{
		{"/v1/towns/not-a-uuid/beads", map[string]any{"title": "x"}, "townId must be a UUID"},
		{"/v1/towns/" + townID + "/beads", map[string]any{"title": ""}, "title is required"},
		{"/v1/towns/" + townID + "/beads", map[string]any{"title": "x", "priority": "urgent"}, "priority must be low, medium, high or critical"},
		{"/v1/towns/" + townID + "/beads", map[string]any{"title": "x", "rig_id": "nope"}, "rig_id must be a UUID"},
		{"/v1/towns/" + townID + "/beads", "not an object", "invalid JSON body"},
		{"/v1/towns/" + townID + "/beads", map[string]any{"title": "a\x00b"}, "NUL"},
	}
	for _, c := range cases {
		status, body := b.do(t, http.MethodPost, c.path, token, c.body)
		require.Equal(t, http.StatusBadRequest, status, c.path)
		require.Contains(t, body["error"], c.want)
	}
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "x", "rig_id": db.NewID()})
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, body["error"], "rig")
	// A backslash before "u0000" in the text is no NUL: that title is fine (and then 404s on
	// the unknown rig, like the one above).
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": `C:\u0000`, "rig_id": db.NewID()})
	require.Equal(t, http.StatusNotFound, status, "%v", body)
	status, _ = b.do(t, http.MethodGet, "/v1/towns/"+db.NewID(), token, nil)
	require.Equal(t, http.StatusNotFound, status)
	status, _ = b.do(t, http.MethodPost, "/v1/towns/"+db.NewID()+"/beads", token, map[string]any{"title": "x"})
	require.Equal(t, http.StatusNotFound, status, "an event for a town that does not exist")

	evs, err := b.store.ListEvents(context.Background(), townID, "", 100)
	require.NoError(t, err)
	require.Empty(t, evs, "rejected requests recorded nothing")
}

// TestNewTownsAreSeeded: a town created through the API starts with SPEC.md §2.11's
// configuration under what the request set.
func TestNewTownsAreSeeded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	require.Equal(t, http.StatusCreated, status)
	tw, err := b.store.GetTown(context.Background(), town["town_id"].(string))
	require.NoError(t, err)
	require.Equal(t, reconciler.SeedTownConfig(reconciler.TownConfig{}), tw.Config)
	require.Equal(t, "pr", tw.Config.MergeStrategy)

	status, town = b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t", "config": map[string]any{"merge_strategy": "direct"}})
	require.Equal(t, http.StatusCreated, status)
	tw, err = b.store.GetTown(context.Background(), town["town_id"].(string))
	require.NoError(t, err)
	require.Equal(t, "direct", tw.Config.MergeStrategy, "what the request sets wins")
	require.Equal(t, 5, *tw.Config.Refinery.AutoMergeDelayMinutes)
}

func TestSlingThenTickThenRead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	townID := town["town_id"].(string)
	status, rig := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "repo"})
	require.Equal(t, http.StatusAccepted, status)
	b.tick(t, townID)
	status, bead := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "do it", "rig_id": rig["rig_id"]})
	require.Equal(t, http.StatusAccepted, status)
	beadID := bead["bead_id"].(string)
	status, _ = b.do(t, http.MethodGet, "/v1/towns/"+townID+"/beads/"+beadID, token, nil)
	require.Equal(t, http.StatusNotFound, status, "the bead exists after the next tick")
	b.tick(t, townID)
	status, got := b.do(t, http.MethodGet, "/v1/towns/"+townID+"/beads/"+beadID, token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "in_progress", got["bead"].(map[string]any)["status"], "the tick that created it also dispatched it")
	status, ticks := b.do(t, http.MethodGet, "/v1/towns/"+townID+"/ticks", token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, ticks["ticks"], 2)
}

func TestDryRunIsSideEffectFree(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	townID := town["town_id"].(string)
	_, rig := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "repo"})
	b.tick(t, townID)
	_, bead := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "do it", "rig_id": rig["rig_id"]})
	ticksBefore, err := b.store.ListTicks(ctx, townID, 100)
	require.NoError(t, err)

	status, body := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/reconcile-dry-run", token, nil)
	require.Equal(t, http.StatusOK, status)
	metrics := body["metrics"].(map[string]any)
	require.EqualValues(t, 1, metrics["eventsDrained"])
	require.EqualValues(t, 1, metrics["actionsEmitted"])
	require.Equal(t, map[string]any{"dispatch_agent": float64(1)}, metrics["actionsByType"])
	actions := body["actions"].([]any)
	require.Equal(t, "dispatch_agent", actions[0].(map[string]any)["type"])

	pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pending, 1, "the event is still pending")
	_, err = b.store.GetBead(ctx, townID, bead["bead_id"].(string))
	require.ErrorIs(t, err, db.ErrNotFound)
	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	require.Empty(t, agents)
	ticksAfter, err := b.store.ListTicks(ctx, townID, 100)
	require.NoError(t, err)
	require.Len(t, ticksAfter, len(ticksBefore), "no tick row")
	jobsList, err := b.svc.Client.JobList(ctx, nil)
	require.NoError(t, err)
	for _, j := range jobsList.Jobs {
		require.NotEqual(t, "start_agent", j.Kind, "no side-effect job")
	}
}

func TestDryRunAnswers409WhenTheTownIsBusy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	townID := town["town_id"].(string)
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = b.store.LockTown(ctx, tx, townID, time.Now(), false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	start := time.Now()
	status, body := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/reconcile-dry-run", token, nil)
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, body["error"], "busy")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestIntentEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	townID := town["town_id"].(string)
	_, rig := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "repo"})
	rigID := rig["rig_id"].(string)
	b.tick(t, townID)

	status, body := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/convoys", token, map[string]any{
		"title": "feature", "staged": true,
		"tasks": []map[string]any{{"title": "a", "rig_id": rigID}, {"title": "b", "rig_id": rigID, "blocked_by": []int{0}}},
	})
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, "review-then-land", body["merge_mode"], "the default")
	convoyID := body["convoy_id"].(string)
	// The merge mode the configuration sets when the request sets none: the rig's
	// override for a convoy within the rig, else the town's.
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{"convoy_merge_mode": "review-and-merge"}})
	require.Equal(t, http.StatusAccepted, status)
	b.tick(t, townID)
	oneTask := map[string]any{"title": "one", "tasks": []map[string]any{{"title": "a", "rig_id": rigID}}}
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/convoys", token, oneTask)
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, "review-and-merge", body["merge_mode"], "the town's")
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+rigID, token, map[string]any{"config": map[string]any{"convoy_merge_mode": "review-then-land"}})
	require.Equal(t, http.StatusAccepted, status)
	b.tick(t, townID)
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/convoys", token, oneTask)
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, "review-then-land", body["merge_mode"], "the rig's override")
	_, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{}})
	_, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+rigID, token, map[string]any{"config": map[string]any{}})
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/convoys", token, map[string]any{
		"title": "bad", "tasks": []map[string]any{{"title": "a", "rig_id": rigID, "blocked_by": []int{0}}},
	})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "tasks[0].blocked_by")
	b.tick(t, townID)
	status, got := b.do(t, http.MethodGet, "/v1/towns/"+townID+"/beads/"+convoyID, token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "convoy", got["bead"].(map[string]any)["type"])
	require.Len(t, got["dependencies"], 2, "its two tasks track it")
	status, _ = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/convoys/"+convoyID+"/start", token, nil)
	require.Equal(t, http.StatusAccepted, status)

	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/container-eviction", token, nil)
	require.Equal(t, http.StatusAccepted, status)
	nonce := body["nonce"].(string)
	b.tick(t, townID)
	tw, err := b.store.GetTown(ctx, townID)
	require.NoError(t, err)
	require.True(t, tw.Draining)
	status, _ = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/container-ready", token, map[string]any{"nonce": nonce})
	require.Equal(t, http.StatusAccepted, status)
	b.tick(t, townID)
	tw, err = b.store.GetTown(ctx, townID)
	require.NoError(t, err)
	require.False(t, tw.Draining)

	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{"merge_strategy": "pr"}})
	require.Equal(t, http.StatusAccepted, status)
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{"merge_strategy": "yolo"}})
	require.Contains(t, body["error"], "merge_strategy")
	require.Equal(t, http.StatusBadRequest, status)
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{"timings": map[string]any{"gupp_warn": "3h"}}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "GUPP timings must grow")
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/config", token, map[string]any{"config": map[string]any{"timings": map[string]any{"gupp_warn": 15}}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "a duration is a string")
	status, body = b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "r", "config": map[string]any{"review_mode": "vibes"}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "review_mode")

	// A rig's PATCH changes what it sends and keeps the rest.
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+rigID, token, map[string]any{"git_url": "https://github.com/acme/repo.git"})
	require.Equal(t, http.StatusAccepted, status)
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+rigID, token, map[string]any{"config": map[string]any{"review_mode": "comments"}})
	require.Equal(t, http.StatusAccepted, status)
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+rigID, token, map[string]any{"config": map[string]any{"review_mode": "vibes"}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "review_mode")
	b.tick(t, townID)
	changed, err := b.store.GetRig(ctx, townID, rigID)
	require.NoError(t, err)
	require.Equal(t, "repo", changed.Name)
	require.Equal(t, "https://github.com/acme/repo.git", changed.GitURL, "a PATCH without git_url keeps it")
	require.Equal(t, "comments", changed.Config.ReviewMode)
	b.tick(t, townID)
	tw, err = b.store.GetTown(ctx, townID)
	require.NoError(t, err)
	require.Equal(t, "pr", tw.Config.MergeStrategy)

	_, bead := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "x", "labels": []string{"gt:held"}, "rig_id": rigID})
	beadID := bead["bead_id"].(string)
	b.tick(t, townID)
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/beads/"+beadID, token, map[string]any{"status": "done"})
	require.Equal(t, http.StatusBadRequest, status)
	status, _ = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/beads/"+beadID, token, map[string]any{"status": "closed"})
	require.Equal(t, http.StatusAccepted, status)
	b.tick(t, townID)
	status, got = b.do(t, http.MethodGet, "/v1/towns/"+townID+"/beads/"+beadID, token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "closed", got["bead"].(map[string]any)["status"])
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/beads/"+beadID, token, map[string]any{"status": "open"})
	require.Equal(t, http.StatusConflict, status)
	require.Contains(t, body["error"], "do not change")
}

func TestRiverUIBehindAdminAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, err := http.Get(b.server.URL + "/riverui/")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")

	// The dashboard is a browser page too: the browser asks for the token.
	resp, err = http.Get(b.server.URL + "/dashboard")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")

	req, err := http.NewRequest(http.MethodGet, b.server.URL+"/riverui/", nil)
	require.NoError(t, err)
	req.SetBasicAuth("admin", token)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "<html")

	status, body := b.do(t, http.MethodGet, "/riverui/api/queues", token, nil)
	require.Equal(t, http.StatusOK, status, "%v", body)
}

// TestBadReferencesAre4xxAndChangeNothing: a request naming what a tick could not apply —
// a blocker that is no bead of the town, a rig name taken or too long, a field the
// request does not have, a town that does not exist — is refused at once, with nothing
// recorded, instead of an event that fails at the tick.
func TestBadReferencesAre4xxAndChangeNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	townID, rigID, _, beadID := b.townWithAgent(t) // a rig named "repo"
	otherTown, _, _, otherBead := b.townWithAgent(t)
	_, rig := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "web"})
	webRig := rig["rig_id"].(string)
	b.tick(t, townID)
	before, err := b.store.ListEvents(ctx, townID, "", 1000)
	require.NoError(t, err)

	for _, c := range []struct {
		method, path string
		body         any
		status       int
		want         string
	}{
		{http.MethodPost, "/beads", map[string]any{"title": "x", "rig_id": rigID, "blocked_by": []string{db.NewID()}}, http.StatusNotFound, "blocked_by: bead"},
		{http.MethodPost, "/beads", map[string]any{"title": "x", "rig_id": rigID, "blocked_by": []string{beadID, otherBead}}, http.StatusNotFound, otherBead},
		{http.MethodPost, "/rigs", map[string]any{"name": "repo"}, http.StatusConflict, `a rig named "repo"`},
		{http.MethodPost, "/rigs", map[string]any{"name": strings.Repeat("r", 201)}, http.StatusBadRequest, "longer than 200"},
		{http.MethodPatch, "/rigs/" + webRig, map[string]any{"name": "repo"}, http.StatusConflict, `a rig named "repo"`},
		{http.MethodPatch, "/rigs/" + webRig, map[string]any{"label": "x"}, http.StatusBadRequest, `unknown field "label"`},
		{http.MethodPost, "/beads", map[string]any{"title": "x", "rig_id": rigID, "priorty": "high"}, http.StatusBadRequest, `unknown field "priorty"`},
	} {
		status, body := b.do(t, c.method, "/v1/towns/"+townID+c.path, token, c.body)
		require.Equal(t, c.status, status, "%s %s: %v", c.method, c.path, body)
		require.Contains(t, body["error"], c.want)
	}
	rec := b.serveJSON(http.MethodPost, "/v1/towns/"+townID+"/beads", []byte(`{"title":"x"} {"title":"y"}`), "")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, rec.Body.String(), "more than one JSON value")
	for _, list := range []string{"rigs", "beads", "agents", "events", "ticks"} {
		status, body := b.do(t, http.MethodGet, "/v1/towns/"+db.NewID()+"/"+list, token, nil)
		require.Equal(t, http.StatusNotFound, status, "%s of a town that does not exist: %v", list, body)
	}
	after, err := b.store.ListEvents(ctx, townID, "", 1000)
	require.NoError(t, err)
	require.Len(t, after, len(before), "refused requests recorded nothing")

	// The same requests done right are taken: a blocker of the town (twice is once), a
	// rig keeping its own name.
	status, body := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "x", "rig_id": rigID, "blocked_by": []string{beadID, strings.ToUpper(beadID)}})
	require.Equal(t, http.StatusAccepted, status, "%v", body)
	status, body = b.do(t, http.MethodPatch, "/v1/towns/"+townID+"/rigs/"+webRig, token, map[string]any{"name": "web"})
	require.Equal(t, http.StatusAccepted, status, "%v", body)
	_ = otherTown
}

// TestMailToAnUpperCaseAgentIDIsDelivered: ids compare as text in some places; the API
// takes any case and the mail reaches its agent.
func TestMailToAnUpperCaseAgentIDIsDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, _, agentID, _ := b.townWithAgent(t)
	status, body := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/mail", token, map[string]any{"to_agent_id": strings.ToUpper(agentID), "subject": "hello"})
	require.Equal(t, http.StatusAccepted, status, "%v", body)
	b.tick(t, townID)
	own := b.signer.Issue(townID, agentID, time.Now().Add(time.Hour))
	status, body = b.do(t, http.MethodPost, "/v1/agent/towns/"+townID+"/agents/"+agentID+"/mail/check", own, nil)
	require.Equal(t, http.StatusOK, status, "%v", body)
	require.Len(t, body["mail"], 1, "the mail reached the agent")
}

// TestHeartbeatWithAChunkedEmptyBody: an agent's heartbeat may come without a body, and
// without a Content-Length either.
func TestHeartbeatWithAChunkedEmptyBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, _, agentID, _ := b.townWithAgent(t)
	req, err := http.NewRequest(http.MethodPost, b.server.URL+"/v1/agent/towns/"+townID+"/agents/"+agentID+"/heartbeat", io.NopCloser(strings.NewReader("")))
	require.NoError(t, err)
	req.ContentLength = -1 // chunked
	req.Header.Set("Authorization", "Bearer "+b.signer.Issue(townID, agentID, time.Now().Add(time.Hour)))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
}
