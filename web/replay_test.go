package web

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
)

func TestFaithfulReplayOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID, rigID, agentID, _ := b.townWithAgent(t)
	b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "y", "rig_id": rigID})
	b.do(t, http.MethodPost, "/v1/agent/towns/"+townID+"/agents/"+agentID+"/done", b.signer.Issue(townID, agentID, time.Now().Add(time.Hour)), map[string]any{"branch": "gt/x"})
	b.tick(t, townID)
	b.tick(t, townID)
	before := b.checksum(t)
	path := "/debug/towns/" + townID + "/replay-events"

	status, rep := b.do(t, http.MethodPost, path, token, map[string]any{"mode": "faithful"})
	require.Equal(t, http.StatusOK, status, rep)
	require.Equal(t, "faithful", rep["mode"])
	require.Equal(t, true, rep["reproduced"], rep)
	require.Equal(t, true, rep["checkpoint_hash_matches"])
	require.EqualValues(t, 0, rep["checkpoint_tick_id"])
	require.Greater(t, rep["ticks_replayed"], float64(1))
	tick := rep["ticks"].([]any)[0].(map[string]any)
	for _, k := range []string{"tick_id", "recorded_actions", "replayed_actions", "actions_match", "recorded_state_hash", "replayed_state_hash", "state_hash_matches"} {
		require.Contains(t, tick, k)
	}
	require.Equal(t, before, b.checksum(t), "a faithful replay leaves no trace")

	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	status, rep = b.do(t, http.MethodPost, path, token, map[string]any{"mode": "faithful", "from": from, "ticks": "divergent"})
	require.Equal(t, http.StatusOK, status, rep)
	require.Empty(t, rep["ticks"], "nothing diverged")

	// Streamed: progress lines, then the report.
	raw, _ := json.Marshal(map[string]any{"mode": "faithful"})
	req, err := http.NewRequest(http.MethodPost, b.server.URL+path, bytes.NewReader(raw))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close() //nolint:errcheck
	var progress, reports int
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var line map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line))
		switch {
		case line["progress"] != nil:
			progress++
		case line["report"] != nil:
			reports++
			require.Equal(t, true, line["report"].(map[string]any)["reproduced"])
		default:
			t.Fatalf("unexpected line %s", sc.Text())
		}
	}
	require.Positive(t, progress)
	require.Equal(t, 1, reports)

	for _, c := range []struct {
		body   map[string]any
		status int
		want   string
	}{
		{map[string]any{"mode": "exact"}, http.StatusBadRequest, "mode must be"},
		{map[string]any{"mode": "faithful", "ticks": "some"}, http.StatusBadRequest, "ticks must be"},
		{map[string]any{"mode": "faithful", "from_tick": 9, "to_tick": 3}, http.StatusBadRequest, "from_tick"},
		{map[string]any{"mode": "faithful", "from": "noon"}, http.StatusBadRequest, "from is not"},
		{map[string]any{"mode": "faithful", "config": map[string]any{"merge_strategy": "yolo"}}, http.StatusBadRequest, "merge_strategy"},
		{map[string]any{"mode": "faithful", "from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"}, http.StatusNotFound, "no recorded tick"},
		{map[string]any{"mode": "faithful", "from_tick": 1, "to_tick": 1, "config": map[string]any{"max_dispatch_attempts": "many"}}, http.StatusBadRequest, "invalid JSON"},
	} {
		status, body := b.do(t, http.MethodPost, path, token, c.body)
		require.Equal(t, c.status, status, c.body)
		require.Contains(t, body["error"], c.want)
	}
	status, _ = b.do(t, http.MethodPost, "/debug/towns/"+db.NewID()+"/replay-events", token, map[string]any{"mode": "faithful"})
	require.Equal(t, http.StatusNotFound, status)
	require.Equal(t, before, b.checksum(t), "refused requests change nothing")

	// Checkpoints on demand.
	status, cp := b.do(t, http.MethodPost, "/debug/towns/"+townID+"/checkpoints", token, nil)
	require.Equal(t, http.StatusCreated, status, cp)
	require.Positive(t, cp["tick_id"])
	status, list := b.do(t, http.MethodGet, "/debug/towns/"+townID+"/checkpoints", token, nil)
	require.Equal(t, http.StatusOK, status)
	require.Len(t, list["checkpoints"], 2, "the one at creation and this one")
	status, rep = b.do(t, http.MethodPost, path, token, map[string]any{"mode": "faithful", "from_tick": int64(cp["tick_id"].(float64)) + 1})
	require.Equal(t, http.StatusOK, status, rep)
	require.Equal(t, cp["tick_id"], rep["checkpoint_tick_id"])
	status, _ = b.do(t, http.MethodGet, "/debug/towns/"+db.NewID()+"/checkpoints", token, nil)
	require.Equal(t, http.StatusNotFound, status)
}
