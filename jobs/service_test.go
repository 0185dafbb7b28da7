package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"gastown/agentrt"
	"gastown/codehost"
	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type testBundle struct {
	store *db.Store
	svc   *Service
	sim   *agentrt.Simulator
}

type testOpts struct {
	workers bool
	cfg     Config
	hooks   testHooks
	sim     agentrt.SimConfig
	// runtime and codeHost replace the simulators (adapters over HTTP).
	runtime  agentrt.Runtime
	codeHost codehost.Host
	// onTick hears about every committed tick.
	onTick func(string, TickResult)
	// tracer, when set, sees the statements of the store's pool.
	tracer pgx.QueryTracer
	// riverPool gives River a pool of its own (NewRiverPool), as `serve` does; the other
	// tests leave River on the store's pool (a test run holds many services at once, and
	// the server has 100 connections).
	riverPool bool
}

func setup(t testing.TB, o testOpts) *testBundle {
	t.Helper()
	store := db.NewStore(dbtest.NewTracedPool(t, o.tracer))
	if o.tracer == nil { // the check's reads would count among a traced test's statements
		store.CheckStateInMemory()
	}
	var svc *Service
	sim := agentrt.NewSimulator(o.sim, reporterOf(func() agentrt.Reporter { return svc.Events }), quiet)
	t.Cleanup(sim.Close)
	if o.cfg.SweepInterval == 0 {
		o.cfg.SweepInterval = time.Hour // tests that rely on the sweep say so
	}
	deps := Deps{Store: store, Runtime: sim, CodeHost: o.codeHost, Logger: quiet, OnTick: o.onTick}
	if o.runtime != nil {
		deps.Runtime = o.runtime
	}
	if o.riverPool {
		rp, err := NewRiverPool(context.Background(), store.Pool)
		require.NoError(t, err)
		t.Cleanup(rp.Close) // after the service's Stop, registered below
		deps.RiverPool = rp
	}
	svc, err := newService(deps, o.cfg, o.workers, o.hooks)
	require.NoError(t, err)
	if o.workers {
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, svc.Start(ctx))
		t.Cleanup(func() {
			stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer stopCancel()
			_ = svc.Stop(stopCtx)
			cancel()
		})
	}
	return &testBundle{store: store, svc: svc, sim: sim}
}

type reporterOf func() agentrt.Reporter

func (f reporterOf) Heartbeat(ctx context.Context, town, agent string, a agentrt.Activity) error {
	return f().Heartbeat(ctx, town, agent, a)
}
func (f reporterOf) Done(ctx context.Context, town, agent string, p reconciler.AgentDonePayload) error {
	return f().Done(ctx, town, agent, p)
}
func (f reporterOf) Completed(ctx context.Context, town, agent string, p reconciler.AgentCompletedPayload) error {
	return f().Completed(ctx, town, agent, p)
}

// newTown creates a town with a rig, via events applied by a tick run here.
func (b *testBundle) newTown(t *testing.T) (townID, rigID string) {
	t.Helper()
	ctx := context.Background()
	town, err := b.store.CreateTown(ctx, db.NewID(), "t", reconciler.TownConfig{}, time.Now())
	require.NoError(t, err)
	rigID = db.NewID()
	_, err = b.svc.Events.Append(ctx, town.ID, db.NewEvent{Type: reconciler.EventRigCreated,
		Payload: reconciler.RigCreatedPayload{RigID: rigID, Name: "r"}})
	require.NoError(t, err)
	return town.ID, rigID
}

func beadCreated(rigID, title string, labels ...string) db.NewEvent {
	return db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(),
		Payload: reconciler.BeadCreatedPayload{Type: reconciler.BeadIssue, Title: title, RigID: rigID, Labels: labels}}
}

// held beads are never dispatched: no agent reports wake the town in the tests that must
// prove the wake-up path alone.
const heldLabel = reconciler.LabelHeld

// tick runs one tick the way the worker does, without River fetching it: on a pipelined
// transaction that commits with the tick's last writes.
func (b *testBundle) tick(ctx context.Context, townID string) (TickResult, error) {
	tx, err := b.store.BeginPipelined(ctx)
	if err != nil {
		return TickResult{}, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	return b.svc.Ticker.Tick(ctx, tx, townID, TickOptions{Commit: true})
}

// fromEnv parses the environment variable name (heavier runs of a test), or returns def
// when it is unset; a value that does not parse fails the test.
func fromEnv[T any](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := parse(s)
	require.NoError(t, err, name)
	return v
}

func eventually(t *testing.T, within time.Duration, cond func() bool, msg string) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("not within %s: %s", within, msg)
	return 0
}

func TestTickLockExcludesASecondTick(t *testing.T) {
	t.Parallel()
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b := setup(t, testOpts{hooks: testHooks{failpoint: func(_ context.Context, stage, _ string) error {
		if stage == "drained" {
			once.Do(func() { close(held); <-release })
		}
		return nil
	}}})
	ctx := context.Background()
	townID, _ := b.newTown(t)

	first := make(chan error, 1)
	go func() { _, err := b.tick(ctx, townID); first <- err }()
	<-held
	start := time.Now()
	secondCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := b.tick(secondCtx, townID)
	require.ErrorIs(t, err, db.ErrTownBusy, "a second tick must not run while the first holds the town")
	require.Less(t, time.Since(start), time.Second, "the second tick backs off at once instead of waiting")
	close(release)
	require.NoError(t, <-first)
	// Once the first committed, the town is free again.
	_, err = b.tick(ctx, townID)
	require.NoError(t, err)
}

func TestConcurrentTicksApplyEachEventExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, rigID := b.newTown(t)

	const producers, perProducer, tickers = 4, 25, 4
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var ticks atomic.Int64
	for range tickers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.tick(ctx, townID); err == nil {
					ticks.Add(1)
				} else if !errors.Is(err, db.ErrTownBusy) {
					t.Errorf("tick: %v", err)
					return
				}
			}
		})
	}
	var pwg sync.WaitGroup
	for range producers {
		pwg.Go(func() {
			for range perProducer {
				if _, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "x")); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	pwg.Wait()
	eventually(t, 10*time.Second, func() bool {
		has, err := b.store.HasPendingEvents(ctx, townID)
		return err == nil && !has
	}, "all events drained")
	close(stop)
	wg.Wait()

	evs, err := b.store.ListEvents(ctx, townID, "", 1000)
	require.NoError(t, err)
	require.Len(t, evs, producers*perProducer+1)
	for _, e := range evs {
		require.Equal(t, "processed", e.State)
		require.EqualValues(t, 1, e.Attempts, "event %d applied more than once", e.Seq)
	}
	beads, err := b.store.ListBeads(ctx, townID, db.BeadFilter{Type: reconciler.BeadIssue, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, beads, producers*perProducer)
	require.Positive(t, ticks.Load())
}

func TestErrorAfterDrainRollsBackTheWholeTick(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	b := setup(t, testOpts{hooks: testHooks{failpoint: func(_ context.Context, stage, _ string) error {
		if stage == "applied" && fail.Load() {
			return errors.New("injected failure after apply")
		}
		return nil
	}}})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	_, err := b.tick(ctx, townID) // the rig exists
	require.NoError(t, err)
	ev := beadCreated(rigID, "work")
	_, err = b.svc.Events.Append(ctx, townID, ev)
	require.NoError(t, err)
	ticksBefore, err := b.store.ListTicks(ctx, townID, 100)
	require.NoError(t, err)

	fail.Store(true)
	res, err := b.tick(ctx, townID)
	require.ErrorContains(t, err, "injected failure")
	require.Equal(t, 1, res.Drain.Applied, "the tick did drain and apply before failing")
	require.Len(t, res.SideEffects, 1, "and it asked for a start")

	has, err := b.store.HasPendingEvents(ctx, townID)
	require.NoError(t, err)
	require.True(t, has, "the event is still pending")
	_, err = b.store.GetBead(ctx, townID, ev.BeadID)
	require.ErrorIs(t, err, db.ErrNotFound, "state unchanged")
	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	require.Empty(t, agents)
	jobs, err := b.svc.Client.JobList(ctx, river.NewJobListParams().Kinds(StartAgentArgs{}.Kind()))
	require.NoError(t, err)
	require.Empty(t, jobs.Jobs, "no side-effect job left the rolled-back tick")
	ticksAfter, err := b.store.ListTicks(ctx, townID, 100)
	require.NoError(t, err)
	require.Len(t, ticksAfter, len(ticksBefore), "no tick row")

	fail.Store(false)
	res, err = b.tick(ctx, townID)
	require.NoError(t, err)
	require.Equal(t, 1, res.Drain.Applied)
	jobs, err = b.svc.Client.JobList(ctx, river.NewJobListParams().Kinds(StartAgentArgs{}.Kind()))
	require.NoError(t, err)
	require.Len(t, jobs.Jobs, 1, "the committed tick's side effect is in the outbox")
}

func TestTickOfOneTownNeverTouchesAnother(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townA, rigA := b.newTown(t)
	townB, rigB := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, townA, beadCreated(rigA, "a"))
	require.NoError(t, err)
	_, err = b.svc.Events.Append(ctx, townB, beadCreated(rigB, "b"))
	require.NoError(t, err)

	res, err := b.tick(ctx, townA)
	require.NoError(t, err)
	require.Equal(t, 2, res.Drain.Drained)
	require.Len(t, res.SideEffects, 1)

	pendingB, err := b.store.ListEvents(ctx, townB, "pending", 10)
	require.NoError(t, err)
	require.Len(t, pendingB, 2, "B's events wait for B's tick")
	rigs, err := b.store.ListRigs(ctx, townB)
	require.NoError(t, err)
	require.Empty(t, rigs)
	townBRow, err := b.store.GetTown(ctx, townB)
	require.NoError(t, err)
	require.Zero(t, townBRow.TickCount)
	ticksB, err := b.store.ListTicks(ctx, townB, 10)
	require.NoError(t, err)
	require.Empty(t, ticksB)
}

func TestEventCommittedDuringRunningTickIsAppliedPromptly(t *testing.T) {
	t.Parallel()
	var (
		hold    atomic.Bool
		held    = make(chan struct{}, 1)
		release = make(chan struct{})
	)
	b := setup(t, testOpts{workers: true, hooks: testHooks{failpoint: func(ctx context.Context, stage, _ string) error {
		if stage == "drained" && hold.CompareAndSwap(true, false) {
			held <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}}})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	eventually(t, 5*time.Second, func() bool {
		has, _ := b.store.HasPendingEvents(ctx, townID)
		return !has
	}, "rig created")

	hold.Store(true)
	_, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "first", heldLabel))
	require.NoError(t, err)
	<-held // the tick that drained "first" is running and holds the town
	late := beadCreated(rigID, "late", heldLabel)
	_, err = b.svc.Events.Append(ctx, townID, late)
	require.NoError(t, err)
	close(release)
	// A lost wake-up would leave it for the hourly sweep; the bound only has to outlast a
	// loaded machine (see TestEventsRacingTicksAreAllAppliedPromptly).
	took := eventually(t, 10*time.Second, func() bool {
		_, err := b.store.GetBead(ctx, townID, late.BeadID)
		return err == nil
	}, "the event committed during the running tick is applied by a following tick (the sweep runs hourly here)")
	t.Logf("applied %s after the running tick was released", took)
}

func TestEventsRacingTicksAreAllAppliedPromptly(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{workers: true})
	ctx := context.Background()
	townID, rigID := b.newTown(t)

	const producers, perProducer = 4, 50
	var wg sync.WaitGroup
	var last atomic.Pointer[string]
	for range producers {
		wg.Go(func() {
			for range perProducer {
				ev := beadCreated(rigID, "race", heldLabel)
				if _, err := b.svc.Events.Append(ctx, townID, ev); err != nil {
					t.Errorf("append: %v", err)
					return
				}
				last.Store(&ev.BeadID)
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	// The sweep runs hourly here: a lost wake-up leaves events pending for good, so the
	// bound only has to outlast a loaded machine (make test runs packages side by side;
	// with two CPU hogs the last event took up to 1.2 s, and a CI run went past 2 s).
	eventually(t, 10*time.Second, func() bool {
		has, err := b.store.HasPendingEvents(ctx, townID)
		return err == nil && !has
	}, "every event appended while ticks ran is applied without the sweep")
	beads, err := b.store.ListBeads(ctx, townID, db.BeadFilter{Type: reconciler.BeadIssue, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, beads, producers*perProducer)
}

func TestDevSliceClosesABeadThroughRiver(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{
		workers: true,
		cfg:     Config{ActiveInterval: 100 * time.Millisecond, SweepInterval: 100 * time.Millisecond},
		sim:     agentrt.SimConfig{HeartbeatInterval: 50 * time.Millisecond, WorkMin: 100 * time.Millisecond, WorkMax: 200 * time.Millisecond},
	})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	ev := beadCreated(rigID, "ship it")
	_, err := b.svc.Events.Append(ctx, townID, ev)
	require.NoError(t, err)

	statuses := map[reconciler.BeadStatus]bool{}
	eventually(t, 20*time.Second, func() bool {
		bead, err := b.store.GetBead(ctx, townID, ev.BeadID)
		if err != nil {
			return false
		}
		statuses[bead.Status] = true
		return bead.Status == reconciler.StatusClosed
	}, "the bead reaches closed")
	require.True(t, statuses[reconciler.StatusInProgress] || statuses[reconciler.StatusInReview], "seen on its way: %v", statuses)

	mrs, err := b.store.ListBeads(ctx, townID, db.BeadFilter{Type: reconciler.BeadMergeRequest, Limit: 10})
	require.NoError(t, err)
	require.Len(t, mrs, 1)
	require.Equal(t, reconciler.StatusClosed, mrs[0].Status)
	agents, err := b.store.ListAgents(ctx, townID)
	require.NoError(t, err)
	roles := map[reconciler.AgentRole]int{}
	for _, a := range agents {
		roles[a.Role]++
	}
	require.Equal(t, map[reconciler.AgentRole]int{reconciler.RolePolecat: 1, reconciler.RoleRefinery: 1}, roles)
	require.GreaterOrEqual(t, b.sim.Starts(), 2)
	ticks, err := b.store.ListTicks(ctx, townID, 1000)
	require.NoError(t, err)
	var dispatched, succeeded int
	for _, tk := range ticks {
		dispatched += tk.ActionsByType["dispatch_agent"]
		succeeded += int(tk.SideEffectsSucceeded)
	}
	require.GreaterOrEqual(t, dispatched, 2)
	require.GreaterOrEqual(t, succeeded, 2)
}
