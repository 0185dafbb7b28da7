package jobs

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"gastown/db"
	"gastown/reconciler"
)

// checkT is what the helpers need of a test: *testing.T or rapid's *rapid.T.
type checkT interface {
	require.TestingT
	Helper()
}

// fullTickWouldDoNothing runs a full tick of the town in a transaction it rolls back and
// reports whether it would only have advanced the town's schedule: no input, no action,
// no housekeeping, no violation, no change, no active work.
func (b *testBundle) fullTickWouldDoNothing(t checkT, townID string) (bool, TickResult) {
	t.Helper()
	ctx := context.Background()
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	res, err := b.svc.Ticker.Tick(ctx, tx, townID, TickOptions{DryRun: true})
	require.NoError(t, err)
	nothing := len(res.Actions) == 0 && res.Drain.Drained == 0 && len(res.Heartbeats) == 0 &&
		res.Housekeeping == (db.HousekeepingResult{}) && len(res.Violations) == 0 && !res.StateChanged &&
		!res.ActiveWork && res.PendingEventCount == 0
	return nothing, res
}

// makeIdleDue puts a town on the idle cadence, due now: its last tick scheduled this one
// an idle interval later.
func (b *testBundle) makeIdleDue(t checkT, townID string, now time.Time) time.Time {
	t.Helper()
	due := now.Add(-time.Second).Truncate(time.Microsecond) // as Postgres stores it
	_, err := b.store.Pool.Exec(context.Background(), `UPDATE towns SET last_tick_at = $2, next_tick_at = $3 WHERE town_id = $1`,
		townID, due.Add(-reconciler.IdleTickInterval), due)
	require.NoError(t, err)
	return due
}

type townSchedule struct {
	TickCount  int64
	NextTickAt time.Time
	LastTickAt *time.Time
}

func (b *testBundle) schedule(t checkT, townID string) townSchedule {
	t.Helper()
	var s townSchedule
	require.NoError(t, b.store.Pool.QueryRow(context.Background(),
		`SELECT tick_count, next_tick_at, last_tick_at FROM towns WHERE town_id = $1`, townID).Scan(&s.TickCount, &s.NextTickAt, &s.LastTickAt))
	return s
}

// A quiet tick is a full tick with nothing to do, taken in a batch: random towns driven
// through random histories (issues, agents reporting, heartbeats left unapplied, events
// left pending, evictions, hours passing), then put on the idle cadence and due. For every
// town, the quiet batch's snapshot equals the one a full tick loads; a town the batch
// ticks is one a full tick (run and rolled back first) would have done nothing in but
// schedule; its schedule moves on by exactly the idle interval from when it was due, with
// its reconciler_ticks row; a town the batch leaves out is untouched and handed back for a
// full tick. Both outcomes must occur, or the check says nothing.
func TestPropertyQuietTicksAreFullTicksWithNothingToDo(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	b.svc.Ticker.clock = clk.now
	ctx := context.Background()
	var ticked, left, byRules int

	rapid.Check(t, func(rt *rapid.T) {
		town, err := b.store.CreateTown(ctx, db.NewID(), "q", reconciler.TownConfig{}, clk.now())
		require.NoError(rt, err)
		rig := db.NewID()
		_, err = b.svc.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{RigID: rig, Name: "r"}})
		require.NoError(rt, err)
		tick := func() {
			_, err := b.tick(ctx, town.ID)
			require.NoError(rt, err)
		}
		tick()
		agents := func() []string {
			as, err := b.store.ListAgents(ctx, town.ID)
			require.NoError(rt, err)
			ids := make([]string, len(as))
			for i, a := range as {
				ids[i] = a.ID
			}
			return ids
		}
		var beads []string
		if rapid.Bool().Draw(rt, "dispatch and cancel") { // leaves an idle polecat the GC rule may collect
			e := beadCreated(rig, "w")
			_, err := b.svc.Events.Append(ctx, town.ID, e)
			require.NoError(rt, err)
			tick()
			_, err = b.svc.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: e.BeadID,
				Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
			require.NoError(rt, err)
			tick()
		}
		for range rapid.IntRange(0, 12).Draw(rt, "steps") {
			var ev *db.NewEvent
			switch rapid.IntRange(0, 6).Draw(rt, "op") {
			case 0:
				e := beadCreated(rig, "w")
				beads = append(beads, e.BeadID)
				ev = &e
			case 1:
				if len(beads) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: rapid.SampledFrom(beads).Draw(rt, "cancel"),
						Payload: reconciler.BeadCancelledPayload{CancelStatus: rapid.SampledFrom([]reconciler.BeadStatus{reconciler.StatusClosed, reconciler.StatusFailed}).Draw(rt, "to")}}
				}
			case 2:
				if ids := agents(); len(ids) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventAgentDone, AgentID: rapid.SampledFrom(ids).Draw(rt, "done"), Payload: reconciler.AgentDonePayload{Branch: "b"}}
				}
			case 3:
				if ids := agents(); len(ids) > 0 {
					ev = &db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: rapid.SampledFrom(ids).Draw(rt, "completed"),
						Payload: reconciler.AgentCompletedPayload{Status: rapid.SampledFrom([]string{"completed", "failed"}).Draw(rt, "how")}}
				}
			case 4:
				if ids := agents(); len(ids) > 0 {
					require.NoError(rt, b.store.RecordHeartbeat(ctx, town.ID, rapid.SampledFrom(ids).Draw(rt, "hb"), db.Heartbeat{}))
				}
			case 5:
				ev = &db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: "n"}}
			case 6:
				clk.add(time.Duration(rapid.Int64Range(0, int64(30*time.Hour)).Draw(rt, "advance")))
			}
			if ev != nil {
				_, err := b.svc.Events.Append(ctx, town.ID, *ev)
				require.NoError(rt, err)
			}
			if rapid.IntRange(0, 4).Draw(rt, "tick") > 0 { // sometimes inputs stay pending
				tick()
			}
		}
		// Around the rules' timers: the GC's 24 h, stalled agents' windows.
		clk.add(rapid.SampledFrom([]time.Duration{0, 10 * time.Minute, time.Hour, 23 * time.Hour, 25 * time.Hour, 48 * time.Hour}).Draw(rt, "idle for"))
		now := clk.now().Truncate(time.Microsecond) // the clock of the ticks
		due := b.makeIdleDue(rt, town.ID, now)
		nothing, full := b.fullTickWouldDoNothing(rt, town.ID)

		// The batch's snapshot of the town is the one a full tick loads.
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(rt, err)
		batch, err := b.store.LockQuietTowns(ctx, tx, now, db.QuietOptions{
			ActiveInterval: reconciler.ActiveTickInterval, EventRetention: reconciler.EventRetention, Max: 100,
		})
		require.NoError(rt, err)
		require.NoError(rt, tx.Rollback(ctx))
		single, err := b.snapshot(ctx, town.ID, now)
		require.NoError(rt, err)
		locked := false
		for _, qt := range batch.Towns {
			if qt.TownID == town.ID {
				locked = true
				require.Equal(rt, single, qt.Snapshot, "the quiet batch loaded another snapshot than a full tick")
			}
		}

		tickRows := func() (n int) {
			require.NoError(rt, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM reconciler_ticks WHERE town_id = $1`, town.ID).Scan(&n))
			return n
		}
		before, rowsBefore := b.schedule(rt, town.ID), tickRows()
		res, err := b.svc.QuietTicks(ctx)
		require.NoError(rt, err)
		after, rows := b.schedule(rt, town.ID), tickRows()-rowsBefore
		if after.TickCount > before.TickCount {
			ticked++
			if !nothing {
				rt.Fatalf("quiet-ticked a town in which a full tick would act: actions %v, drained %d, heartbeats %d, housekeeping %+v, violations %v, changed %v, active %v, pending %d",
					full.Actions, full.Drain.Drained, len(full.Heartbeats), full.Housekeeping, full.Violations, full.StateChanged, full.ActiveWork, full.PendingEventCount)
			}
			require.Equal(rt, before.TickCount+1, after.TickCount)
			require.True(rt, after.NextTickAt.Equal(due.Add(reconciler.IdleTickInterval)), "next tick %s, due %s", after.NextTickAt, due)
			require.True(rt, after.LastTickAt.Equal(now))
			require.Equal(rt, 1, rows, "one reconciler_ticks row for the quiet tick")
			require.NotContains(rt, res.Fallback, town.ID)
		} else {
			left++
			if locked {
				byRules++ // the town passed the batch's filter; the rules found work
			}
			require.Equal(rt, before, after, "a town the batch left out is untouched")
			require.Zero(rt, rows)
			require.Contains(rt, res.Fallback, town.ID, "a due town the batch left out must be handed back for a full tick")
		}
		// Out of the next batches' way.
		_, err = b.store.Pool.Exec(ctx, `UPDATE towns SET next_tick_at = 'infinity' WHERE town_id = $1`, town.ID)
		require.NoError(rt, err)
	})
	t.Logf("quiet-ticked %d towns, left %d to full ticks (%d of them by the rules)", ticked, left, byRules)
	require.Positive(t, ticked, "no town was quiet-ticked: the property was never exercised")
	require.Positive(t, left, "no town was left to a full tick: the property was never exercised")
}

// A town that passes the batch's filter (no input, no live bead, nothing to expire or
// prune) can still need a full tick: here an idle polecat the GC rule collects after 24 h.
// The rules run on the batch's snapshot and leave such a town to a full tick, untouched.
func TestQuietTicksLeaveTownsTheRulesActIn(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	b.svc.Ticker.clock = clk.now
	ctx := context.Background()
	town := b.townWithIdlePolecat(t)

	clk.add(25 * time.Hour)
	now := clk.now()
	b.makeIdleDue(t, town, now)
	nothing, full := b.fullTickWouldDoNothing(t, town)
	require.False(t, nothing)
	require.Equal(t, 1, countType[reconciler.DeleteAgent](full.Actions), "the GC rule collects the idle polecat: %v", full.Actions)

	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	batch, err := b.store.LockQuietTowns(ctx, tx, now, db.QuietOptions{ActiveInterval: reconciler.ActiveTickInterval, EventRetention: reconciler.EventRetention, Max: 10})
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	require.Len(t, batch.Towns, 1, "the town passes the batch's filter")

	before := b.schedule(t, town)
	res, err := b.svc.QuietTicks(ctx)
	require.NoError(t, err)
	require.Zero(t, res.Ticked)
	require.Equal(t, []string{town}, res.Fallback, "the rules' work is left to a full tick")
	require.Equal(t, before, b.schedule(t, town))
}

// townWithIdlePolecat makes a town whose only agent is an idle polecat (its issue was
// cancelled after dispatch): the GC rule collects it once it has been idle 24 h.
func (b *testBundle) townWithIdlePolecat(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	town, rig := b.newTown(t)
	tick := func() {
		_, err := b.tick(ctx, town)
		require.NoError(t, err)
	}
	tick()
	issue := beadCreated(rig, "short")
	_, err := b.svc.Events.Append(ctx, town, issue)
	require.NoError(t, err)
	tick() // dispatches a polecat
	_, err = b.svc.Events.Append(ctx, town, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: issue.BeadID,
		Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
	require.NoError(t, err)
	tick() // the polecat is unhooked and idle
	tick()
	agents, err := b.store.ListAgents(ctx, town)
	require.NoError(t, err)
	require.Len(t, agents, 1)
	return town
}

// More towns than a batch holds, the rules leaving several to full ticks: the run goes on
// batch after batch without taking a town it left twice, ticks every quiet town, and ends.
func TestQuietTicksRunsBatchesPastTownsLeftToFullTicks(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{cfg: Config{QuietBatch: 2}})
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	b.svc.Ticker.clock = clk.now
	ctx := context.Background()
	var gcDue, quietTowns []string
	for range 3 {
		gcDue = append(gcDue, b.townWithIdlePolecat(t))
	}
	for range 3 {
		town, err := b.store.CreateTown(ctx, db.NewID(), "q", reconciler.TownConfig{}, clk.now())
		require.NoError(t, err)
		_, err = b.tick(ctx, town.ID)
		require.NoError(t, err)
		quietTowns = append(quietTowns, town.ID)
	}
	clk.add(25 * time.Hour)
	now := clk.now()
	for _, town := range append(append([]string{}, gcDue...), quietTowns...) {
		b.makeIdleDue(t, town, now)
	}
	runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := b.svc.QuietTicks(runCtx)
	require.NoError(t, err, "the run must end")
	require.Equal(t, len(quietTowns), res.Ticked)
	require.ElementsMatch(t, gcDue, res.Fallback)
	for _, town := range quietTowns {
		require.Equal(t, int64(2), b.schedule(t, town).TickCount)
	}
}

// A town another tick holds, or with a pending event, is not quiet-ticked: the batch skips
// a locked town (it never waits for it, and never ticks a town twice at once; the tick that
// holds it schedules it) and hands the town with an event back for a full tick; a town
// with nothing is ticked.
func TestQuietTicksSkipHeldAndBusyTowns(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	b.svc.Ticker.clock = func() time.Time { return now }
	var towns [3]string
	for i := range towns {
		town, err := b.store.CreateTown(ctx, db.NewID(), "q", reconciler.TownConfig{}, now)
		require.NoError(t, err)
		towns[i] = town.ID
		_, err = b.tick(ctx, town.ID)
		require.NoError(t, err)
		b.makeIdleDue(t, town.ID, now)
	}
	held, busy, free := towns[0], towns[1], towns[2]
	_, err := b.svc.Events.Append(ctx, busy, db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: "n"}})
	require.NoError(t, err)
	b.makeIdleDue(t, busy, now) // the append's wake-up would not tick it here (no workers)

	// Another tick holds the first town for the whole batch.
	tx, err := b.store.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = b.store.LockTown(ctx, tx, held, time.Time{}, false, quiet)
	require.NoError(t, err)

	var onTick sync.Map
	b.svc.onTick = func(town string, res TickResult) { onTick.Store(town, res) }
	start := time.Now()
	res, err := b.svc.QuietTicks(ctx)
	require.NoError(t, err)
	require.Less(t, time.Since(start), 5*time.Second, "the batch waited for a held town")
	require.Equal(t, 1, res.Ticked)
	require.Equal(t, []string{busy}, res.Fallback)
	require.Equal(t, int64(1), b.schedule(t, held).TickCount)
	require.Equal(t, int64(1), b.schedule(t, busy).TickCount)
	require.Equal(t, int64(2), b.schedule(t, free).TickCount)
	r, ok := onTick.Load(free)
	require.True(t, ok, "the quiet tick was reported")
	require.True(t, r.(TickResult).Quiet)
	require.NoError(t, tx.Rollback(ctx))
}

// Through the real sweep and River workers: idle towns keep their cadence by quiet ticks
// alone, a town with active work keeps ticking by full ticks, and an idle town that gets an
// event is ticked in full at once and then returns to quiet ticks.
func TestSweepKeepsTheIdleCadenceWithQuietTicks(t *testing.T) {
	t.Parallel()
	const idle, quietEvery = time.Second, 200 * time.Millisecond
	type tick struct {
		at, next time.Time
		quiet    bool
	}
	var mu sync.Mutex
	ticks := map[string][]tick{}
	b := setup(t, testOpts{workers: true, cfg: Config{
		SweepInterval: 50 * time.Millisecond, QuietInterval: quietEvery, IdleInterval: idle, ActiveInterval: 100 * time.Millisecond,
	}, onTick: func(town string, res TickResult) {
		mu.Lock()
		defer mu.Unlock()
		ticks[town] = append(ticks[town], tick{res.ClockAt, res.NextTickAt, res.Quiet})
	}})
	ctx := context.Background()
	var idleTowns []string
	for range 20 {
		town, err := b.store.CreateTown(ctx, db.NewID(), "idle", reconciler.TownConfig{}, time.Now())
		require.NoError(t, err)
		idleTowns = append(idleTowns, town.ID)
	}
	active, rig := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, active, beadCreated(rig, "waits", heldLabel))
	require.NoError(t, err)

	time.Sleep(3500 * time.Millisecond)
	// An event for an idle town: a full tick takes it at once.
	woken := idleTowns[0]
	appended := time.Now()
	created := beadCreated("", "short-lived")
	_, err = b.svc.Events.Append(ctx, woken, created, db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: created.BeadID,
		Payload: reconciler.BeadCancelledPayload{CancelStatus: reconciler.StatusClosed}})
	require.NoError(t, err)
	time.Sleep(4500 * time.Millisecond) // ≥ 3 ticks of a 1 s cadence with room for a loaded machine

	mu.Lock()
	defer mu.Unlock()
	for _, town := range idleTowns {
		ts := ticks[town]
		require.GreaterOrEqual(t, len(ts), 3, "an idle town ticked %d times in 8 s on a 1 s cadence", len(ts))
		require.False(t, ts[0].quiet, "a new town's first tick is a full one")
		quietTicks := 0
		for i := 1; i < len(ts); i++ {
			if ts[i].quiet {
				quietTicks++
				due := ts[i-1].next
				require.False(t, ts[i].at.Before(due), "quiet tick %d of a town came before it was due", i)
				require.Less(t, ts[i].at.Sub(due), 2*time.Second, "quiet tick %d of a town came late", i)
				require.True(t, ts[i].next.Equal(due.Add(idle)), "a quiet tick keeps the cadence from when the town was due")
			}
		}
		require.GreaterOrEqual(t, quietTicks, 2)
	}
	var full []tick
	for _, tk := range ticks[woken] {
		if !tk.quiet && tk.at.After(appended) {
			full = append(full, tk)
		}
	}
	require.NotEmpty(t, full, "the woken town had no full tick")
	require.Less(t, full[0].at.Sub(appended), 900*time.Millisecond, "the event waited for the idle cadence (1 s)")
	require.True(t, ticks[woken][len(ticks[woken])-1].quiet, "the woken town did not return to quiet ticks")
	activeTicks := ticks[active]
	require.GreaterOrEqual(t, len(activeTicks), 10, "a town with active work ticks on its 100 ms cadence (as often as the sweep runs)")
	for _, tk := range activeTicks {
		require.False(t, tk.quiet, "a town with active work was quiet-ticked")
	}
}
