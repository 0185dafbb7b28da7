package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/jobs"
)

// townWithAgent makes a town whose tick dispatched a polecat, and returns their ids.
func (b *testBundle) townWithAgent(t testing.TB) (townID, rigID, agentID, beadID string) {
	t.Helper()
	_, town := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": "t"})
	townID = town["town_id"].(string)
	_, rig := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/rigs", token, map[string]any{"name": "repo"})
	rigID = rig["rig_id"].(string)
	b.tick(t, townID)
	_, bead := b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "x", "rig_id": rigID})
	beadID = bead["bead_id"].(string)
	b.tick(t, townID)
	agents, err := b.store.ListAgents(context.Background(), townID)
	require.NoError(t, err)
	require.Len(t, agents, 1)
	return townID, rigID, agents[0].ID, beadID
}

func TestAgentCallbacksNeedTheAgentsOwnToken(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, _, agentID, beadID := b.townWithAgent(t)
	otherTown, _, otherAgent, _ := b.townWithAgent(t)
	path := "/v1/agent/towns/" + townID + "/agents/" + agentID
	exp := time.Now().Add(time.Hour)

	status, body := b.do(t, http.MethodPost, path+"/heartbeat", "", nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, body["error"], "bearer")
	status, _ = b.do(t, http.MethodPost, path+"/heartbeat", token, nil)
	require.Equal(t, http.StatusUnauthorized, status, "an admin token is not an agent token")
	expired := b.signer.Issue(townID, agentID, time.Now().Add(-time.Minute))
	status, body = b.do(t, http.MethodPost, path+"/heartbeat", expired, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, body["error"], "expired")
	status, body = b.do(t, http.MethodPost, path+"/done", b.signer.Issue(townID, otherAgent, exp), map[string]any{"branch": "b"})
	require.Equal(t, http.StatusForbidden, status, "another agent's token")
	require.Contains(t, body["error"], "only for itself")
	status, _ = b.do(t, http.MethodPost, path+"/done", b.signer.Issue(otherTown, agentID, exp), map[string]any{"branch": "b"})
	require.Equal(t, http.StatusForbidden, status, "a token of another town")

	own := b.signer.Issue(townID, agentID, exp)
	status, _ = b.do(t, http.MethodPost, path+"/heartbeat", own, map[string]any{"active_tools": []string{"bash"}})
	require.Equal(t, http.StatusAccepted, status)
	status, body = b.do(t, http.MethodPost, path+"/done", own, map[string]any{"branch": ""})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body["error"], "branch")
	status, body = b.do(t, http.MethodPost, path+"/done?wait=5s", own, map[string]any{"branch": "gt/x"})
	require.Equal(t, http.StatusAccepted, status)
	require.Equal(t, "pending", body["state"], "nothing ticks in this test: the wait ends with the event still pending")
	b.tick(t, townID)
	bead, err := b.store.GetBead(context.Background(), townID, beadID)
	require.NoError(t, err)
	require.Equal(t, "in_review", string(bead.Status))
	// An agent of this town that does not exist: 404 even with a well-signed token.
	ghost := db.NewID()
	status, _ = b.do(t, http.MethodPost, "/v1/agent/towns/"+townID+"/agents/"+ghost+"/heartbeat", b.signer.Issue(townID, ghost, exp), nil)
	require.Equal(t, http.StatusNotFound, status)
}

func TestRequestBodyLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, body := b.do(t, http.MethodPost, "/v1/towns", token, map[string]any{"name": strings.Repeat("x", 100<<10)})
	require.Equal(t, http.StatusRequestEntityTooLarge, status)
	require.Contains(t, body["error"], "larger than")
}

func TestStatusEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, _, agentID, _ := b.townWithAgent(t)
	status, body := b.do(t, http.MethodGet, "/debug/towns/"+townID+"/status", token, nil)
	require.Equal(t, http.StatusOK, status)
	alarm := body["alarmStatus"].(map[string]any)
	require.EqualValues(t, 1, alarm["agents"].(map[string]any)["working"])
	require.EqualValues(t, 1, alarm["beads"].(map[string]any)["inProgress"])
	require.Equal(t, "active (5s)", alarm["alarm"].(map[string]any)["intervalLabel"])
	require.NotNil(t, alarm["reconciler"])
	require.NotEmpty(t, alarm["recentEvents"])
	meta := body["agentMeta"].([]any)
	require.Equal(t, agentID, meta[0].(map[string]any)["bead_id"])
	require.Len(t, body["beadSummary"], 1)
	status, _ = b.do(t, http.MethodGet, "/debug/towns/"+db.NewID()+"/status", token, nil)
	require.Equal(t, http.StatusNotFound, status)
}

// townTables are the tables that hold towns' rows (each has a town_id).
var townTables = []string{"towns", "rigs", "beads", "agents", "bead_dependencies", "review_metadata", "convoy_metadata",
	"escalation_metadata", "town_events", "agent_heartbeats", "agent_nudges", "bead_events", "reconciler_ticks",
	"tick_inputs", "town_checkpoints", "invariant_violations"}

// checksum hashes every town table and River's job table, to show that a request left
// the database exactly as it was.
func (b *testBundle) checksum(t testing.TB) string {
	t.Helper()
	return b.digest(t, append(slices.Clone(townTables), "river_job"), "")
}

// townChecksum hashes one town's rows in every town table.
func (b *testBundle) townChecksum(t testing.TB, townID string) string {
	t.Helper()
	return b.digest(t, townTables, "WHERE town_id = $1", townID)
}

// digest hashes the rows of the tables (filtered by where, with args).
func (b *testBundle) digest(t testing.TB, tables []string, where string, args ...any) string {
	t.Helper()
	h := sha256.New()
	for _, table := range tables {
		var s string
		require.NoError(t, b.store.Pool.QueryRow(context.Background(),
			"SELECT coalesce(string_agg(t::text, '|' ORDER BY t::text), '') FROM "+table+" t "+where, args...).Scan(&s))
		h.Write([]byte(table + ":" + s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// serveJSON sends a JSON body to the handler with the admin token, or with agentToken on
// the agent routes.
func (b *testBundle) serveJSON(method, path string, body []byte, agentToken string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(path, "/v1/agent/") {
		req.Header.Set("Authorization", "Bearer "+agentToken)
	} else {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

// routeFiller fills the id placeholders of the OpenAPI paths.
func routeFiller(town, rig, agent, bead string) *strings.Replacer {
	return strings.NewReplacer("{townId}", town, "{agentId}", agent, "{beadId}", bead, "{convoyId}", bead, "{rigId}", rig)
}

func TestDryRunAndReplayLeaveTheDatabaseUnchanged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID, agentID, _ := b.townWithAgent(t)
	// Pending work for the dry-run: a done report and a new bead.
	b.do(t, http.MethodPost, "/v1/agent/towns/"+townID+"/agents/"+agentID+"/done", b.signer.Issue(townID, agentID, time.Now().Add(time.Hour)), map[string]any{"branch": "gt/x"})
	b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "y", "rig_id": rigID})
	before := b.checksum(t)

	status, dry := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/reconcile-dry-run", token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, before, b.checksum(t), "dry-run left no trace")
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	status, rep := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/replay-events", token, map[string]any{"from": from, "to": to})
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, rep["caveat"], "CURRENT live state")
	require.Greater(t, rep["eventsReplayed"], float64(3))
	require.Equal(t, before, b.checksum(t), "replay left no trace")

	// The dry-run showed what the next realTypes tick does.
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	res, err := b.svc.Ticker.Tick(ctx, tx, townID, jobs.TickOptions{})
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	metrics := dry["metrics"].(map[string]any)
	require.EqualValues(t, len(res.Actions), metrics["actionsEmitted"])
	require.EqualValues(t, res.Drain.Drained, metrics["eventsDrained"])
	var types []string
	for _, a := range dry["actions"].([]any) {
		types = append(types, a.(map[string]any)["type"].(string))
	}
	var realTypes []string
	for _, a := range res.Actions {
		realTypes = append(realTypes, string(a.Type()))
	}
	require.Equal(t, realTypes, types)

	for _, c := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"from": from}, "required"},
		{map[string]any{"from": "yesterday", "to": to}, "from is not"},
		{map[string]any{"from": to, "to": from}, "must not be after"},
	} {
		status, body := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/replay-events", token, c.body)
		require.Equal(t, http.StatusBadRequest, status)
		require.Contains(t, body["error"], c.want)
	}
}

func TestCompactDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		5 * time.Second: "5s", 5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m",
		90 * time.Second: "1m30s", 0: "0s", 1500 * time.Millisecond: "2s",
	} {
		require.Equal(t, want, compactDuration(d), "%s", d)
	}
}
