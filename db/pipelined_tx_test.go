package db_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// beginPipelinedTick locks townID for a tick on a pipelined transaction (rolled back at
// the test's end unless committed), with the bundle's clock.
func beginPipelinedTick(t *testing.T, b *testBundle, townID string) (*db.PipelinedTx, *db.TownTx) {
	t.Helper()
	ctx := context.Background()
	ptx, err := b.store.BeginPipelined(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ptx.Rollback(ctx) })
	tt, err := b.store.BeginTick(ctx, ptx, townID, false, 100, quiet)
	require.NoError(t, err)
	tt.Now = b.now
	return ptx, tt
}

// pipelinedTick locks and drains townID on a pipelined transaction.
func pipelinedTick(t *testing.T, b *testBundle) func(townID string) (*db.PipelinedTx, *db.TownTx, db.DrainResult) {
	return func(townID string) (*db.PipelinedTx, *db.TownTx, db.DrainResult) {
		t.Helper()
		ptx, tt := beginPipelinedTick(t, b, townID)
		dr, err := tt.DrainEvents(context.Background(), db.DrainOptions{MaxEvents: 100, MaxAttempts: 3})
		require.NoError(t, err)
		return ptx, tt, dr
	}
}

// A tick on a pipelined transaction sends BEGIN with its first statements and COMMIT with
// its last writes, followed by the look for events committed while it ran — no round trip
// of their own — and what it wrote is committed.
func TestPipelinedTickSendsBeginAndCommitWithItsStatements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, _ := b.town(t)
	nudge := db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
	first := b.append(t, townID, nudge)[0]

	tracer.Take()
	ptx, tt, dr := pipelinedTick(t, b)(townID)
	require.Equal(t, 1, dr.Applied)
	meanwhile := b.append(t, townID, nudge)[0] // committed after the drain
	tracer.Take()                              // the append's own statements
	c := &db.TickCommit{Recheck: true}
	require.NoError(t, tt.Finish(ctx, db.TickRecord{EventsDrained: dr.Drained, NextTickAt: b.now.Add(time.Minute), Commit: c}))
	require.True(t, c.Committed)
	require.NoError(t, c.RecheckErr)
	require.True(t, c.PendingAfter, "the event appended during the tick is found after its commit")
	require.ErrorIs(t, ptx.Rollback(ctx), pgx.ErrTxClosed, "the commit closed the transaction")

	alone := tracer.TakeAlone()
	require.NotContains(t, alone, "begin", "BEGIN rides with the lock's batch")
	require.NotContains(t, alone, "commit", "COMMIT rides with the last writes")
	require.Empty(t, named(alone, "EventHasPendingAfter"), "the re-check rides with the commit")

	events, err := b.store.ListEvents(ctx, townID, "", 10)
	require.NoError(t, err)
	states := map[int64]string{}
	for _, e := range events {
		states[e.Seq] = e.State
	}
	require.Equal(t, "processed", states[first.Seq])
	require.Equal(t, "pending", states[meanwhile.Seq])
	var ticks int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks WHERE town_id = $1 AND tick_id = $2`, townID, tt.TickID).Scan(&ticks))
	require.Equal(t, 1, ticks)
}

// A tick whose last writes fail commits nothing: the held-back completion of a job that
// is not running (gastown_complete_tick_job raises) skips the COMMIT behind it, the
// caller rolls back, and the connection goes back to the pool outside any transaction.
func TestPipelinedTickWhoseLastWriteFailsCommitsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, _ := b.town(t)
	ev := b.append(t, townID, db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}})[0]

	ptx, tt, dr := pipelinedTick(t, b)(townID)
	require.Equal(t, 1, dr.Applied)
	c := &db.TickCommit{Recheck: true}
	err := tt.Finish(ctx, db.TickRecord{EventsDrained: dr.Drained, NextTickAt: b.now.Add(time.Minute), Commit: c,
		Complete: func(ctx context.Context, tx pgx.Tx) error { return db.CompleteTickJob(ctx, tx, -1) }})
	require.ErrorContains(t, err, "tick job -1 is no longer running")
	require.False(t, c.Committed)
	require.NoError(t, ptx.Rollback(ctx))

	pending, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pending, 1)
	require.Equal(t, ev.Seq, pending[0].Seq, "the event was not applied")
	var ticks int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks WHERE town_id = $1 AND tick_id = $2`, townID, tt.TickID).Scan(&ticks))
	require.Zero(t, ticks)

	// Every connection the pool hands out now is outside a transaction.
	for range 4 {
		c, err := b.store.Pool.Acquire(ctx)
		require.NoError(t, err)
		defer c.Release()
		require.Equal(t, byte('I'), c.Conn().PgConn().TxStatus())
	}
}

// A pipelined transaction that sends a statement alone first sends BEGIN alone; one that
// sends nothing sends nothing at all, not even at its end.
func TestPipelinedTxBeginsOnlyWhenItSendsSomething(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, _ := b.town(t)

	ptx, err := b.store.BeginPipelined(ctx)
	require.NoError(t, err)
	tracer.Take()
	require.NoError(t, ptx.Rollback(ctx))
	require.Empty(t, tracer.Take(), "nothing was sent, nothing to roll back")

	ptx, err = b.store.BeginPipelined(ctx)
	require.NoError(t, err)
	_, err = ptx.Exec(ctx, `UPDATE towns SET name = 'renamed' WHERE town_id = $1`, townID)
	require.NoError(t, err)
	require.Equal(t, []string{"begin", `UPDATE towns SET name = 'renamed' WHERE town_id = $1`}, tracer.TakeAlone())
	require.NoError(t, ptx.Rollback(ctx))
	var name string
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT name FROM towns WHERE town_id = $1`, townID).Scan(&name))
	require.NotEqual(t, "renamed", name, "rolled back")

	ptx, err = b.store.BeginPipelined(ctx)
	require.NoError(t, err)
	_, err = ptx.Exec(ctx, `UPDATE towns SET name = 'renamed' WHERE town_id = $1`, townID)
	require.NoError(t, err)
	require.NoError(t, ptx.Commit(ctx))
	require.ErrorIs(t, ptx.Commit(ctx), pgx.ErrTxClosed)
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT name FROM towns WHERE town_id = $1`, townID).Scan(&name))
	require.Equal(t, "renamed", name, "committed")
}

// A tick of a small town reads the town's state with its lock: the drain takes the beads,
// agents and rigs it needs from it (no point read, no round trip of its own), and the
// rules' snapshot reads again only the tables the drain wrote — and sees its writes. A
// town this process has not read yet, or one past prefetchStateMaxRows, reads its state
// once, after the drain.
func TestSmallTownStateIsReadWithTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	tick := pipelinedTick(t, b)
	townID, rigID := b.town(t)
	issue := b.issue(t, townID, rigID, "small")
	b.tick(t, townID, nil)
	statusChanged := db.NewEvent{Type: reconciler.EventBeadStatusChanged, BeadID: issue,
		Payload: reconciler.BeadStatusChangedPayload{Status: reconciler.StatusInProgress}}

	// stateReads runs a tick of one event up to its snapshot and counts the reads.
	stateReads := func(ev db.NewEvent) (lock, snapshot map[string]int, snap *reconciler.Snapshot) {
		t.Helper()
		b.append(t, townID, ev)
		tracer.Take()
		ptx, tt, dr := tick(townID)
		require.Equal(t, 1, dr.Applied)
		lock = counts(tracer.Take())
		snap, err := tt.LoadSnapshot(ctx)
		require.NoError(t, err)
		snapshot = counts(tracer.Take())
		require.NoError(t, ptx.Commit(ctx))
		return lock, snapshot, snap
	}

	// First tick of the town in this process (a new store): its size is unknown, the
	// drain reads the bead by id.
	b.store = db.NewStore(b.store.Pool)
	lock, snapshot, _ := stateReads(db.NewEvent{Type: reconciler.EventBeadStatusChanged, BeadID: issue,
		Payload: reconciler.BeadStatusChangedPayload{Status: reconciler.StatusOpen}})
	require.Equal(t, 1, lock["BeadGet"])
	require.Zero(t, lock["BeadListForSnapshot"])
	require.Equal(t, 1, snapshot["BeadListForSnapshot"])
	require.Equal(t, 1, snapshot["RigListByTown"])

	// Now it is known to be small: state with the lock, the bead from memory, and only
	// the beads read again (the drain wrote them).
	lock, snapshot, snap := stateReads(statusChanged)
	require.Zero(t, lock["BeadGet"], "the drain reads the bead from the state read with the lock")
	require.Equal(t, 1, lock["BeadListForSnapshot"])
	require.Equal(t, 1, lock["AgentListForSnapshot"])
	require.Equal(t, 1, lock["RigListByTown"])
	require.Equal(t, 1, snapshot["BeadListForSnapshot"], "the drain wrote beads: read again")
	require.Zero(t, snapshot["AgentListForSnapshot"]+snapshot["RigListByTown"]+snapshot["DependencyListByTown"], "tables the drain did not write are not read again")
	require.Equal(t, 1, snapshot["EventCountsForSnapshot"])
	var got reconciler.BeadStatus
	for _, bd := range snap.Beads {
		if bd.ID == issue {
			got = bd.Status
		}
	}
	require.Equal(t, reconciler.StatusInProgress, got, "the snapshot sees the drain's write")
	require.Len(t, snap.Rigs, 1, "the tables not read again are the lock's")

	// Past the bound: the state is read once, after the drain.
	_, err := b.store.Pool.Exec(ctx, `INSERT INTO beads (town_id, bead_id, type, status, title, rig_id, created_at, updated_at)
		SELECT $1, gen_random_uuid(), 'issue', 'closed', 'old ' || i, $2, now(), now() FROM generate_series(1, 120) i`, townID, rigID)
	require.NoError(t, err)
	lock, _, _ = stateReads(statusChanged) // learns the size (read from memory: it was small)
	require.Equal(t, 1, lock["BeadListForSnapshot"])
	lock, snapshot, _ = stateReads(statusChanged)
	require.Zero(t, lock["BeadListForSnapshot"], "a town past the bound reads its state after the drain")
	require.Equal(t, 1, lock["BeadGet"])
	require.Equal(t, 1, snapshot["BeadListForSnapshot"])
	require.Equal(t, 1, snapshot["AgentListForSnapshot"])
}

// counts counts statements by their sqlc name.
func counts(statements []string) map[string]int {
	out := map[string]int{}
	for _, sql := range statements {
		if name, ok := strings.CutPrefix(sql, "-- name: "); ok {
			name, _, _ = strings.Cut(name, " ")
			out[name]++
		}
	}
	return out
}

// A heartbeat applied by a tick that read its small town's state with the lock updates
// the agent in memory as the statement does in the table: the agents are not read again
// (neither by id nor for the rules' snapshot), and the snapshot equals — field by field
// and by state hash — what a fresh read finds once the tick has committed.
func TestHeartbeatUpdatesTheAgentReadWithTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, _, working, idle := townOfTwoAgents(t, b)
	// One agent goes idle while keeping its hook (a heartbeat then makes it working); the
	// other stays working.
	b.tick(t, townID, []reconciler.Action{reconciler.TransitionAgent{AgentID: idle, From: reconciler.AgentWorking, To: reconciler.AgentIdle}})
	at := b.now.Add(30 * time.Second).Add(123456 * time.Nanosecond) // sub-microsecond: Postgres keeps microseconds
	require.NoError(t, b.store.RecordHeartbeat(ctx, townID, idle, db.Heartbeat{LastEventType: "tool_call", LastEventAt: at, ActiveTools: []string{"bash", "edit"}}))
	require.NoError(t, b.store.RecordHeartbeat(ctx, townID, working, db.Heartbeat{ActiveTools: []string{}}))

	tracer.Take()
	ptx, tt := beginPipelinedTick(t, b, townID)
	lock := counts(tracer.Take())
	require.Equal(t, 1, lock["AgentListForSnapshot"], "a small town known to this process: its state comes with the lock")
	inputs, err := tt.ApplyHeartbeats(ctx)
	require.NoError(t, err)
	require.Len(t, inputs, 2)
	snap, err := tt.LoadSnapshot(ctx)
	require.NoError(t, err)
	after := counts(tracer.Take())
	require.Equal(t, 2, after["AgentApplyHeartbeat"], "the heartbeats are written")
	require.Zero(t, after["AgentListForSnapshot"]+after["AgentGet"], "the agents are not read again")
	require.NoError(t, ptx.Commit(ctx))
	requireSnapshotOfTheTables(t, b, townID, snap)
	for _, a := range snap.Agents {
		if a.ID == idle {
			require.Equal(t, reconciler.AgentWorking, a.Status, "touchAgent: a hooked idle agent is working again")
			require.Equal(t, []string{"bash", "edit"}, a.ActiveTools)
		}
	}
}

// A drain's writes to agents (unhook, status, attempts reset) are made to the agents read
// with the lock as well: the drain reads agents by id from memory and the rules' snapshot
// does not read the table again, and the snapshot is the table's. When a savepoint rolls
// back an event that wrote agents in memory, the tick reads the table again.
func TestDrainWritesToAgentsAreMadeInMemory(t *testing.T) {
	t.Parallel()
	for _, rollback := range []bool{false, true} {
		t.Run(map[bool]string{false: "applied", true: "rolled back"}[rollback], func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			b, tracer := tracedBundle(t)
			townID, issue, first, second := townOfTwoAgents(t, b)
			b.append(t, townID,
				db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: second, Payload: reconciler.AgentCompletedPayload{Status: "failed", Reason: "crash"}},
				db.NewEvent{Type: reconciler.EventAgentDispatched, AgentID: first, Payload: reconciler.AgentDispatchedPayload{BeadID: issue}},
			)

			tracer.Take()
			ptx, tt := beginPipelinedTick(t, b, townID)
			tt.Now = b.now.Add(time.Minute).Add(123456 * time.Nanosecond)
			require.Equal(t, 1, counts(tracer.Take())["AgentListForSnapshot"], "the small town's state comes with the lock")
			opts := db.DrainOptions{MaxEvents: 100, MaxAttempts: 3}
			if rollback {
				// The batch applies the exit (its writes made in memory too), then fails at
				// the second event and rolls back; event by event, the exit fails: its writes
				// are undone, in the table and so in memory.
				calls := 0
				opts.FailEvent = func(db.Event) error {
					if calls++; calls == 2 || calls == 3 {
						return errors.New("injected")
					}
					return nil
				}
			}
			dr, err := tt.DrainEvents(ctx, opts)
			require.NoError(t, err)
			snap, err := tt.LoadSnapshot(ctx)
			require.NoError(t, err)
			after := counts(tracer.Take())
			require.Positive(t, after["AgentResetDispatchAttempts"], "the writes reach the table: %v", after)
			if rollback {
				require.Equal(t, 1, dr.Failed)
				require.Equal(t, 1, after["AgentListForSnapshot"], "the agents are read again after the rollback")
			} else {
				require.Zero(t, after["AgentListForSnapshot"]+after["AgentGet"], "the agents are not read again: %v", after)
			}
			require.NoError(t, ptx.Commit(ctx))
			requireSnapshotOfTheTables(t, b, townID, snap)
			for _, a := range snap.Agents {
				switch {
				case a.ID == first:
					require.Zero(t, a.DispatchAttempts, "agent_dispatched resets the attempts")
				case a.ID == second && !rollback:
					require.Equal(t, reconciler.AgentIdle, a.Status)
					require.Empty(t, a.HookBeadID)
				case a.ID == second:
					require.Equal(t, reconciler.AgentWorking, a.Status, "the exit was rolled back")
					require.NotEmpty(t, a.HookBeadID)
				}
			}
		})
	}
}

// townOfTwoAgents makes a town with two issues, each dispatched to a polecat of its own;
// first works on issue.
func townOfTwoAgents(t *testing.T, b *testBundle) (townID, issue, first, second string) {
	t.Helper()
	townID, rigID := b.town(t)
	issue = b.issue(t, townID, rigID, "work")
	first = b.dispatch(t, townID, rigID, issue)
	second = b.dispatch(t, townID, rigID, b.issue(t, townID, rigID, "more work"))
	return townID, issue, first, second
}

// requireSnapshotOfTheTables checks a committed tick's snapshot against a fresh read of the
// town: its agents field by field, and its state hash.
func requireSnapshotOfTheTables(t *testing.T, b *testBundle, townID string, snap *reconciler.Snapshot) {
	t.Helper()
	ctx := context.Background()
	fresh := db.NewStore(b.store.Pool) // no state of its own: reads every table
	tx, err := fresh.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	ft, err := fresh.LockTown(ctx, tx, townID, b.now, false, quiet)
	require.NoError(t, err)
	read, err := ft.LoadSnapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, utcAgents(read.Agents), utcAgents(snap.Agents))
	require.Equal(t, reconciler.StateDigestOf(read).Sum(), reconciler.StateDigestOf(snap).Sum(), "the state hash of the tick's snapshot is the table's")
}

// utcAgents is agents with their times in UTC (a read's and memory's may differ in zone).
func utcAgents(agents []reconciler.Agent) []reconciler.Agent {
	out := slices.Clone(agents)
	for i := range out {
		a := &out[i]
		a.LastActivityAt, a.LastEventAt, a.StalledAt, a.CreatedAt = a.LastActivityAt.UTC(), a.LastEventAt.UTC(), a.StalledAt.UTC(), a.CreatedAt.UTC()
	}
	return out
}
