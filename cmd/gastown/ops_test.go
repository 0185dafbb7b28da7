package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/agenttoken"
	"gastown/db"
	"gastown/db/dbtest"
	"gastown/jobs"
	"gastown/reconciler"
	"gastown/web"
)

func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := dbtest.NewStore(t)
	sim := agentrt.NewSimulator(agentrt.SimConfig{}, nil, logger)
	t.Cleanup(sim.Close)
	svc, err := jobs.New(jobs.Deps{Store: store, Runtime: sim, Logger: logger}, jobs.Config{}, false)
	require.NoError(t, err)
	signer, err := agenttoken.NewSigner("0123456789abcdef")
	require.NoError(t, err)
	api, err := web.New(web.Config{AdminTokens: []string{"tok"}, AgentTokens: signer}, store, svc, logger)
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)

	townID, rig := townWithRig(t, store, svc, "ops-town")
	_, err = svc.Events.Append(ctx, townID,
		db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(), Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: "do it", RigID: rig}})
	require.NoError(t, err)

	args := func(a ...string) []string { return append(a, "--url", srv.URL, "--admin-token", "tok") }
	out, err := execute(ctx, args("towns")...)
	require.NoError(t, err)
	require.Contains(t, out, "TOWN")
	require.Contains(t, out, "ops-town")

	out, err = execute(ctx, args("dry-run", townID)...)
	require.NoError(t, err)
	require.Contains(t, out, "2 events would drain")

	out, err = execute(ctx, args("dry-run", townID, "--json")...)
	require.NoError(t, err)
	var dry map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &dry))
	require.Contains(t, dry, "actions")

	out, err = execute(ctx, args("status", townID)...)
	require.NoError(t, err)
	require.Contains(t, out, "pending   2 events")

	from, to := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	out, err = execute(ctx, args("replay", townID, "--from", from, "--to", to)...)
	require.NoError(t, err)
	require.Contains(t, out, "2 events replayed")
	require.Contains(t, out, "dispatch_agent")

	_, err = execute(ctx, args("replay", townID, "--from", to, "--to", from)...)
	require.ErrorContains(t, err, "from must not be after to")

	// Faithful and what-if replays of the town's recorded ticks.
	tickOnce(t, store, svc, townID)
	out, err = execute(ctx, args("replay", townID, "--faithful")...)
	require.NoError(t, err)
	require.Contains(t, out, "faithful replay: 1 ticks re-run from the checkpoint of tick 0")
	require.Contains(t, out, "every tick reproduced")
	out, err = execute(ctx, args("replay", townID, "--faithful", "--what-if-config", `{"merge_strategy": "pr"}`)...)
	require.NoError(t, err)
	require.Contains(t, out, "what-if replay")
	_, err = execute(ctx, args("replay", townID, "--faithful", "--what-if-config", `{"merge_strategy": "yolo"}`)...)
	require.ErrorContains(t, err, "merge_strategy")
	_, err = execute(ctx, args("replay", townID, "--faithful", "--what-if-config", `not json`)...)
	require.ErrorContains(t, err, "must be a JSON object")
	_, err = execute(ctx, "towns", "--url", srv.URL, "--admin-token", "wrong")
	require.ErrorContains(t, err, "invalid token")
	_, err = execute(ctx, "towns", "--url", "http://127.0.0.1:1", "--admin-token", "tok")
	require.ErrorContains(t, err, "cannot reach the gastown API")
}
