package jobs

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"gastown/db"
	"gastown/reconciler"
)

// Random towns driven by random event sequences through real ticks on Postgres: after
// every tick invariants #5, #6 and #7 hold, and once the inputs stop the town settles —
// its ticks stop emitting actions instead of flip-flopping forever. Each check runs in a
// town of its own in one database (towns are isolated tenants).
func TestPropertyTicksKeepInvariantsAndSettle(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	clk := &clock{t: time.Now().UTC()}
	b.svc.Ticker.clock = clk.now
	b.svc.Ticker.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	rapid.Check(t, func(rt *rapid.T) {
		town, err := b.store.CreateTown(ctx, db.NewID(), "p", reconciler.TownConfig{}, clk.now())
		require.NoError(rt, err)
		rig := db.NewID()
		_, err = b.svc.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rig, Name: "r"}})
		require.NoError(rt, err)

		var beads []string
		tick := func() TickResult {
			res, err := b.tick(ctx, town.ID)
			require.NoError(rt, err)
			after, err := b.snapshot(ctx, town.ID, clk.now())
			require.NoError(rt, err)
			for _, v := range reconciler.CheckInvariants(after) {
				if v.Invariant == 5 || v.Invariant == 6 || v.Invariant == 7 {
					rt.Fatalf("invariant #%d violated after a tick: %s", v.Invariant, v.Message)
				}
			}
			return res
		}
		agentIDs := func() []string {
			as, err := b.store.ListAgents(ctx, town.ID)
			require.NoError(rt, err)
			var ids []string
			for _, a := range as {
				ids = append(ids, a.ID)
			}
			return ids
		}
		tick()
		steps := rapid.IntRange(1, 25).Draw(rt, "steps")
		for range steps {
			var ev *db.NewEvent
			switch rapid.IntRange(0, 8).Draw(rt, "op") {
			case 0, 1:
				e := beadCreated(rig, "w")
				if rapid.Bool().Draw(rt, "held") {
					e = beadCreated(rig, "w", reconciler.LabelHeld)
				}
				beads = append(beads, e.BeadID)
				ev = &e
			case 2:
				if ids := agentIDs(); len(ids) > 0 {
					require.NoError(rt, b.store.RecordHeartbeat(ctx, town.ID, rapid.SampledFrom(ids).Draw(rt, "hb"), db.Heartbeat{}))
				}
			case 3:
				if ids := agentIDs(); len(ids) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventAgentDone, AgentID: rapid.SampledFrom(ids).Draw(rt, "done"),
						Payload: reconciler.AgentDonePayload{Branch: "b"}}
				}
			case 4:
				if ids := agentIDs(); len(ids) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: rapid.SampledFrom(ids).Draw(rt, "completed"),
						Payload: reconciler.AgentCompletedPayload{Status: rapid.SampledFrom([]string{"completed", "failed"}).Draw(rt, "how"),
							Reason: rapid.SampledFrom([]string{"", "container eviction"}).Draw(rt, "why")}}
				}
			case 5:
				if ids := agentIDs(); len(ids) > 0 {
					_, err := b.store.RecordContainerStatus(ctx, b.store.Pool, town.ID, rapid.SampledFrom(ids).Draw(rt, "cs"),
						rapid.SampledFrom([]string{"exited", "not_found", "unknown"}).Draw(rt, "status"), "")
					require.NoError(rt, err)
				}
			case 6:
				if len(beads) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: rapid.SampledFrom(beads).Draw(rt, "cancel"),
						Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}}
				}
			case 7:
				ev = &db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: "n"}}
			case 8:
				clk.add(time.Duration(rapid.Int64Range(0, int64(3*time.Hour)).Draw(rt, "advance")))
			}
			if ev != nil {
				_, err := b.svc.Events.Append(ctx, town.ID, *ev)
				require.NoError(rt, err)
			}
			tick()
		}
		// No more input: the town must settle.
		quiet := 0
		for i := 0; i < 300 && quiet < 10; i++ {
			clk.add(10 * time.Minute)
			if res := tick(); len(res.Actions) == 0 && len(res.SideEffects) == 0 {
				quiet++
			} else {
				quiet = 0
			}
		}
		if quiet < 10 {
			res := tick()
			rt.Fatalf("town did not settle; still emitting %v", res.Actions)
		}
	})
}

// snapshot loads a town's state outside a tick (read-only, rolled back).
func (b *testBundle) snapshot(ctx context.Context, townID string, now time.Time) (*reconciler.Snapshot, error) {
	tx, err := b.store.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	tt, err := b.store.LockTown(ctx, tx, townID, now, true, quiet)
	if err != nil {
		return nil, err
	}
	return tt.LoadSnapshot(ctx)
}
