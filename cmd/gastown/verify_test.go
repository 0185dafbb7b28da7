package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/db"
	"gastown/db/dbtest"
	"gastown/jobs"
	"gastown/reconciler"
)

// TestVerifyHistory: a town's history verifies; a record that no longer matches what the
// rules do (here: a tick's recorded actions doctored, as a changed rule would leave it)
// makes verify-history exit non-zero naming that tick and the difference.
func TestVerifyHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	pool, err := db.Connect(ctx, url, 4)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := db.NewStore(pool)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sim := agentrt.NewSimulator(agentrt.SimConfig{}, nil, logger)
	t.Cleanup(sim.Close)
	svc, err := jobs.New(jobs.Deps{Store: store, Runtime: sim, Logger: logger}, jobs.Config{}, false)
	require.NoError(t, err)
	town, rig := townWithRig(t, store, svc, "verified")
	for i := range 4 {
		_, err = svc.Events.Append(ctx, town, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(),
			Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: fmt.Sprint("issue ", i), RigID: rig}})
		require.NoError(t, err)
		tickOnce(t, store, svc, town)
	}

	out, err := execute(ctx, "verify-history", town, "--database-url", url)
	require.NoError(t, err, out)
	require.Contains(t, out, "recorded ticks reproduced")

	var doctored int64
	require.NoError(t, pool.QueryRow(ctx, `UPDATE tick_inputs SET actions = '[]' WHERE tick_id = (
		SELECT min(tick_id) FROM tick_inputs WHERE town_id = $1 AND actions @> '[{"type": "dispatch_agent"}]') RETURNING tick_id`, town).Scan(&doctored))
	out, err = execute(ctx, "verify-history", "--all", "--database-url", url)
	require.ErrorIs(t, err, errDiverged)
	require.Contains(t, out, fmt.Sprintf("tick %d", doctored))
	require.Contains(t, out, "+ replayed: dispatch_agent")

	_, err = execute(ctx, "verify-history", "--database-url", url)
	require.ErrorContains(t, err, "--all")
	_, err = execute(ctx, "verify-history", db.NewID(), "--database-url", url)
	require.ErrorContains(t, err, "does not exist")
}
