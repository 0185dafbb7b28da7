package db

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// TownTx is one town's state inside one tick transaction, under the town lock. Every
// state change of a town goes through a TownTx; every write uses the tick's clock (Now)
// and derives new ids from the tick id, so a tick is a deterministic function of its
// recorded inputs.
type TownTx struct {
	store  *Store
	tx     pgx.Tx
	db     Querier // wb: every statement of the tick goes through it
	wb     *writeBehind
	q      *dbsqlc.Queries
	logger *slog.Logger

	Town   dbsqlc.Town
	TownID string
	TickID int64
	Now    time.Time

	idSeq       uint64
	lastSeq     int64
	sideEffects []SideEffect
	// prefetched: the heartbeats and pending events read with the lock, until used.
	prefetched *prefetched
	spSeq      int // savepoints begun (their names)
	// state is the town's state as the tick last read it (LoadSnapshot, LoadState); the
	// write-behind knows which of its tables the tick has written since (wb.wrote).
	state *townState
	// openViolations and pendingCount are read with the snapshot (LoadSnapshot).
	openViolations []dbsqlc.InvariantViolation
	pendingCount   int
	pendingCounted bool
	// inMemory counts the writes also made to the state in memory (agentInMemory).
	inMemory int
}

// LockTown begins a TownTx on tx: it locks the town row and allocates the tick id. With
// wait false a town locked by another tick returns ErrTownBusy at once; with wait true
// it waits up to the session's lock_timeout. A missing town is ErrNotFound.
func (s *Store) LockTown(ctx context.Context, tx pgx.Tx, townID string, now time.Time, wait bool, logger *slog.Logger) (*TownTx, error) {
	t, err := s.lockTown(ctx, tx, townID, wait, 0, logger)
	if err != nil {
		return nil, err
	}
	t.Now = now
	return t, nil
}

// BeginTick is LockTown for a tick that drains at most drainBatch events: in the same
// round trip as the lock it reads the heartbeats and the pending events the tick takes
// first (ApplyHeartbeats and DrainEvents use them) and, for a small town (see
// prefetchStateMaxRows), the town's state. The reads run after the lock statement, in the
// transaction that holds the town. The caller sets Now.
func (s *Store) BeginTick(ctx context.Context, tx pgx.Tx, townID string, wait bool, drainBatch int, logger *slog.Logger) (*TownTx, error) {
	return s.lockTown(ctx, tx, townID, wait, drainBatch, logger)
}

func (s *Store) lockTown(ctx context.Context, tx pgx.Tx, townID string, wait bool, drainBatch int, logger *slog.Logger) (*TownTx, error) {
	var (
		p          pipeline
		row        dbsqlc.TownLockForTickRow
		heartbeats []dbsqlc.AgentHeartbeat
		pending    []dbsqlc.TownEvent
		state      *stateReads
	)
	p.add(func(q Querier) (err error) {
		if wait {
			var r dbsqlc.TownLockForTickWaitRow
			r, err = s.q.TownLockForTickWait(ctx, q, townID)
			row = dbsqlc.TownLockForTickRow(r)
		} else {
			row, err = s.q.TownLockForTick(ctx, q, townID)
		}
		return
	})
	if drainBatch > 0 {
		p.add(func(q Querier) (err error) { heartbeats, err = s.q.HeartbeatListUnapplied(ctx, q, townID); return })
		p.add(func(q Querier) (err error) {
			pending, err = s.q.EventListPending(ctx, q, dbsqlc.EventListPendingParams{TownID: townID, MaxRows: int32(drainBatch + 1)})
			return
		})
		if size, ok := s.sizes.size(townID); ok && size.rows() <= prefetchStateMaxRows {
			state = queueStateReads(ctx, s.q, &p, townID, allState, size)
		}
	}
	err := p.run(ctx, tx)
	if errors.Is(err, pgx.ErrNoRows) {
		exists, existsErr := s.q.TownGet(ctx, tx, townID)
		if existsErr == nil && exists.TownID != "" {
			return nil, ErrTownBusy
		}
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lock town %s: %w", townID, err)
	}
	t := s.newTownTx(tx, row.Town, row.TickID, time.Time{}, logger)
	if drainBatch > 0 {
		t.prefetched = &prefetched{heartbeats: heartbeats, pending: pending, drainBatch: drainBatch}
	}
	if state != nil {
		t.installState(state, false) // the drain reads it; the rules get it later
	}
	return t, nil
}

// prefetched are the tick's first reads, taken with its lock (BeginTick).
type prefetched struct {
	heartbeats []dbsqlc.AgentHeartbeat
	pending    []dbsqlc.TownEvent
	drainBatch int
}

// newTownTx is a TownTx on tx for a town whose row the caller read (and locked, for a tick).
func (s *Store) newTownTx(tx pgx.Tx, town dbsqlc.Town, tickID int64, now time.Time, logger *slog.Logger) *TownTx {
	wb := &writeBehind{inner: tx, q: s.q}
	return &TownTx{
		store: s, tx: tx, db: wb, wb: wb, q: s.q, logger: logger.With("town_id", town.TownID, "tick_id", tickID),
		Town: town, TownID: town.TownID, TickID: tickID, Now: now,
	}
}

// Draining reports the town's draining flag as of the lock.
func (t *TownTx) Draining() bool { return t.Town.Draining }

// newID derives the n-th new id of this tick from the town and tick id: re-running the
// tick creates the same ids.
func (t *TownTx) newID() string {
	t.idSeq++
	h := sha256.New()
	h.Write([]byte(t.TownID))
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(t.TickID))
	binary.BigEndian.PutUint64(buf[8:], t.idSeq)
	h.Write(buf[:])
	b := h.Sum(nil)[:16]
	b[6] = (b[6] & 0x0f) | 0x50 // version 5 layout: name-based (SHA)
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// SideEffects returns the side effects the tick's applies requested, in order. The caller
// inserts them as jobs in the same transaction (the outbox).
func (t *TownTx) SideEffects() []SideEffect { return t.sideEffects }

func (t *TownTx) addSideEffect(se SideEffect) { t.sideEffects = append(t.sideEffects, se) }

// SideEffect is an effect outside the database that a tick asked for. It leaves the tick
// as a job inserted in the tick's transaction and reports its outcome as an event.
type SideEffect interface{ sideEffect() }

// StartAgent asks the agent runtime to start an agent on a bead, with the prompt context
// of its role (SPEC.md §5.5).
type StartAgent struct {
	AgentID       string
	AgentName     string
	Role          reconciler.AgentRole
	BeadID        string
	BeadTitle     string
	BeadBody      string
	RigID         string
	GitURL        string
	DefaultBranch string
	// Branch and TargetBranch: the MR's branches for a refinery; for a polecat the branch
	// its work targets (a review-then-land convoy's feature branch, else the default).
	Branch        string
	TargetBranch  string
	MergeStrategy string
	// PRURL is an MR's existing PR (refinery), ReviewMode the rig's review mode.
	PRURL      string
	ReviewMode string
	// SourceAgentID is the polecat whose work a refinery reviews.
	SourceAgentID string
	// Prompt is extra context: the pending triage requests for a triage batch.
	Prompt string
}

// StopAgentEffect asks the agent runtime to stop an agent.
type StopAgentEffect struct {
	AgentID string
	Reason  string
}

// SendMessageEffect delivers a message to a running agent: a nudge (NudgeID) or a mail
// bead (MailBeadID).
type SendMessageEffect struct {
	AgentID    string
	Message    string
	NudgeID    string
	MailBeadID string
}

// PollPREffect polls an MR's PR. WantFeedback is set when the town auto-resolves feedback
// or auto-merges (SPEC.md §5.3: town-level settings only).
type PollPREffect struct {
	MRBeadID     string
	PRURL        string
	WantFeedback bool
}

// MergePREffect merges an MR's PR after a fresh feedback check.
type MergePREffect struct {
	MRBeadID string
	PRURL    string
}

func (StartAgent) sideEffect()        {}
func (StopAgentEffect) sideEffect()   {}
func (SendMessageEffect) sideEffect() {}
func (PollPREffect) sideEffect()      {}
func (MergePREffect) sideEffect()     {}

// MissingEntityError is an apply failure because an entity the event names does not
// exist. Like the reference, the drain marks such events processed instead of retrying.
type MissingEntityError struct {
	Kind string // "Bead", "Agent", "Rig"
	ID   string
}

func (e *MissingEntityError) Error() string { return fmt.Sprintf("%s %s not found", e.Kind, e.ID) }

func missing(kind, id string) error { return &MissingEntityError{Kind: kind, ID: id} }

// bead reads a bead of this town; a missing bead is a MissingEntityError.
func (t *TownTx) bead(ctx context.Context, id string) (reconciler.Bead, error) {
	if b := t.state.bead(id, t.wb.wrote); b != nil {
		out := *b // the caller's own labels and metadata, as a read from the database
		out.Labels, out.Metadata = slices.Clone(b.Labels), maps.Clone(b.Metadata)
		return out, nil
	}
	b, err := t.q.BeadGet(ctx, t.db, dbsqlc.BeadGetParams{TownID: t.TownID, BeadID: id})
	if errors.Is(err, pgx.ErrNoRows) {
		return reconciler.Bead{}, missing("Bead", id)
	}
	if err != nil {
		return reconciler.Bead{}, fmt.Errorf("get bead %s: %w", id, err)
	}
	return beadFromInternal(&b), nil
}

// agent reads an agent of this town; a missing agent is a MissingEntityError.
func (t *TownTx) agent(ctx context.Context, id string) (reconciler.Agent, error) {
	if a := t.state.agent(id, t.wb.wrote); a != nil {
		out := *a // the caller's own tools, as a read from the database
		out.ActiveTools = slices.Clone(a.ActiveTools)
		return out, nil
	}
	a, err := t.q.AgentGet(ctx, t.db, dbsqlc.AgentGetParams{TownID: t.TownID, AgentID: id})
	if errors.Is(err, pgx.ErrNoRows) {
		return reconciler.Agent{}, missing("Agent", id)
	}
	if err != nil {
		return reconciler.Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	return agentFromInternal(a), nil
}

func (t *TownTx) rig(ctx context.Context, id string) (reconciler.Rig, error) {
	if row := t.state.rig(id, t.wb.wrote); row != nil {
		return rigFromInternal(*row), nil
	}
	r, err := t.q.RigGet(ctx, t.db, dbsqlc.RigGetParams{TownID: t.TownID, RigID: id})
	if errors.Is(err, pgx.ErrNoRows) {
		return reconciler.Rig{}, missing("Rig", id)
	}
	if err != nil {
		return reconciler.Rig{}, fmt.Errorf("get rig %s: %w", id, err)
	}
	return rigFromInternal(r), nil
}

// LoadSnapshot reads everything the rules need about the town, in one round trip (the
// queries are pipelined). Of the state tables, once this TownTx has read them (with the
// lock, or an earlier snapshot) it reads again only those the tick wrote since.
func (t *TownTx) LoadSnapshot(ctx context.Context) (*reconciler.Snapshot, error) {
	return t.loadSnapshot(ctx, true)
}

// LoadState reads the state the actions left — what the invariants, HasActiveWork and the
// state hash need: rigs, beads, agents, edges, reviews and convoys, in one round trip.
// Only the tables the tick wrote since it last read them are read again; the others are
// the last read's.
func (t *TownTx) LoadState(ctx context.Context) (*reconciler.Snapshot, error) {
	return t.loadSnapshot(ctx, false)
}

func (t *TownTx) loadSnapshot(ctx context.Context, forRules bool) (*reconciler.Snapshot, error) {
	var (
		p        pipeline
		nudges   []dbsqlc.NudgeListRecentBySourceRow
		failures int32
	)
	var tableAgents []reconciler.Agent // Store.CheckStateInMemory: the table's, to compare
	check := t.store.checkState && t.inMemory > 0 && t.state != nil && t.unread()&stateAgents == 0
	if check {
		p.add(func(q Querier) (err error) {
			tableAgents, err = scanSnapshotAgents(ctx, q, t.TownID, len(t.state.snap.Agents))
			return
		})
	}
	r := queueStateReads(ctx, t.q, &p, t.TownID, t.unread(), t.sizeHint())
	if forRules {
		p.add(func(q Querier) (err error) {
			nudges, err = t.q.NudgeListRecentBySource(ctx, q, dbsqlc.NudgeListRecentBySourceParams{TownID: t.TownID, Since: t.Now.Add(-townConfig(t.Town.Config).GUPPNudgeDedupe())})
			return
		})
		// With the breaker's count, what the end of the tick needs, in the same round trip:
		// the events still pending after the drain, and the open violations (only this
		// tick's RecordViolations changes them).
		p.add(func(q Querier) error {
			n, err := t.q.EventCountsForSnapshot(ctx, q, dbsqlc.EventCountsForSnapshotParams{
				TownID: t.TownID, Since: t.Now.Add(-reconciler.CircuitBreakerWindow), TickID: t.TickID,
			})
			failures, t.pendingCount, t.pendingCounted = n.DispatchFailures, int(n.Pending), err == nil
			return err
		})
		p.add(func(q Querier) (err error) { t.openViolations, err = t.q.ViolationListOpen(ctx, q, t.TownID); return })
	}
	if len(p.steps) > 0 {
		if err := p.run(ctx, t.db); err != nil {
			return nil, fmt.Errorf("load snapshot: %w", err)
		}
	}
	if check {
		if err := compareAgents(t.state.snap.Agents, tableAgents); err != nil {
			return nil, err
		}
	}
	s := t.installState(r, true)
	s.Nudges = make([]reconciler.NudgeRecord, len(nudges))
	for i, n := range nudges {
		s.Nudges[i] = reconciler.NudgeRecord{AgentID: n.AgentID, Source: n.Source, LastAt: n.LastAt}
	}
	s.DispatchFailures = int(failures)
	return s, nil
}

// sizeHint is about how many beads and agents a read of the town's state will find: as
// many as the last read, zero when unknown.
func (t *TownTx) sizeHint() townSize {
	if t.state != nil {
		return townSize{beads: len(t.state.snap.Beads), agents: len(t.state.snap.Agents)}
	}
	size, _ := t.store.sizes.size(t.TownID)
	return size
}

// unread is the state tables a read of the town's state must take: every one at first;
// later — LoadState, or the rules' snapshot after the state was read with the lock
// (BeginTick) — those the tick wrote since.
func (t *TownTx) unread() stateTables {
	if t.state == nil {
		return allState
	}
	return t.wb.wrote
}

// stateReads are reads of some of a town's state tables, queued on a pipeline; once it
// has run, installState makes them the tick's state.
type stateReads struct {
	read    stateTables
	beads   []reconciler.Bead
	agents  []reconciler.Agent
	deps    []dbsqlc.DependencyListByTownRow
	reviews []dbsqlc.ReviewMetadatum
	rigs    []dbsqlc.Rig
	convoys []dbsqlc.ConvoyMetadatum
}

// queueStateReads queues on p the reads of the state tables in read; size is about how
// many beads and agents to expect (zero: unknown).
func queueStateReads(ctx context.Context, qs *dbsqlc.Queries, p *pipeline, townID string, read stateTables, size townSize) *stateReads {
	r := &stateReads{read: read}
	if read&stateBeads != 0 {
		p.add(func(q Querier) (err error) { r.beads, err = scanSnapshotBeads(ctx, q, townID, size.beads); return })
	}
	if read&stateAgents != 0 {
		p.add(func(q Querier) (err error) { r.agents, err = scanSnapshotAgents(ctx, q, townID, size.agents); return })
	}
	if read&stateDependencies != 0 {
		p.add(func(q Querier) (err error) { r.deps, err = qs.DependencyListByTown(ctx, fastScan(q), townID); return })
	}
	if read&stateReviews != 0 {
		p.add(func(q Querier) (err error) { r.reviews, err = qs.ReviewListByTown(ctx, fastScan(q), townID); return })
	}
	if read&stateRigs != 0 {
		p.add(func(q Querier) (err error) { r.rigs, err = qs.RigListByTown(ctx, fastScan(q), townID); return })
	}
	if read&stateConvoys != 0 {
		p.add(func(q Querier) (err error) { r.convoys, err = qs.ConvoyListByTown(ctx, fastScan(q), townID); return })
	}
	return r
}

// installState makes what r read the state now (the writes held back went out first, in
// the same batch) and returns it as a snapshot of the town's state tables; the tables r
// did not read are as the last read left them. handOut says whether the caller hands the
// snapshot out (to the rules, the invariants): its rows are then never changed in place.
func (t *TownTx) installState(r *stateReads, handOut bool) *reconciler.Snapshot {
	read, prev := r.read, t.state
	s := emptySnapshot(t.Town)
	st := &townState{snap: s, handedOut: handOut}
	if read&stateBeads != 0 {
		s.Beads = r.beads
	} else {
		s.Beads, st.beadIdx = prev.snap.Beads, prev.beadIdx
	}
	if read&stateAgents != 0 {
		s.Agents = r.agents
	} else {
		s.Agents, st.agentIdx = prev.snap.Agents, prev.agentIdx
	}
	if read&stateDependencies != 0 {
		s.Dependencies = make([]reconciler.Dependency, len(r.deps))
		for i, d := range r.deps {
			s.Dependencies[i] = reconciler.Dependency{BeadID: d.BeadID, DependsOnID: d.DependsOnBeadID, Type: reconciler.DependencyType(d.DependencyType)}
		}
	} else {
		s.Dependencies = prev.snap.Dependencies
	}
	if read&stateReviews != 0 {
		s.Reviews = make([]reconciler.Review, len(r.reviews))
		for i, rv := range r.reviews {
			s.Reviews[i] = reviewFromInternal(rv)
		}
	} else {
		s.Reviews = prev.snap.Reviews
	}
	if read&stateRigs != 0 {
		for _, rg := range r.rigs {
			s.Rigs = append(s.Rigs, rigFromInternal(rg))
		}
		st.rigs = r.rigs
	} else {
		s.Rigs, st.rigs = prev.snap.Rigs, prev.rigs
	}
	if read&stateConvoys != 0 {
		s.Convoys = make([]reconciler.Convoy, len(r.convoys))
		for i, c := range r.convoys {
			s.Convoys[i] = convoyFromInternal(c)
		}
	} else {
		s.Convoys = prev.snap.Convoys
	}
	t.state, t.wb.wrote = st, 0
	t.store.sizes.note(t.TownID, townSize{beads: len(s.Beads), agents: len(s.Agents)})
	return s
}

// HeartbeatInput is one heartbeat a tick took: recorded with the tick so it can be re-run.
type HeartbeatInput struct {
	AgentID             string     `json:"agent_id"`
	Seq                 int64      `json:"seq"`
	ReceivedAt          time.Time  `json:"received_at"`
	LastEventType       string     `json:"last_event_type,omitempty"`
	LastEventAt         *time.Time `json:"last_event_at,omitempty"`
	ActiveTools         []string   `json:"active_tools"` // null: the heartbeat did not say; []: no tools
	ContainerInstanceID string     `json:"container_instance_id,omitempty"`
}

// ApplyRecordedHeartbeats applies heartbeats a tick recorded, as that tick did (a replay).
func (t *TownTx) ApplyRecordedHeartbeats(ctx context.Context, inputs []HeartbeatInput) (err error) {
	defer t.flushOnReturn(ctx, &err)
	for _, in := range inputs {
		if err := t.applyHeartbeat(ctx, in); err != nil {
			return err
		}
		if err := t.noteContainerInstance(ctx, in.ContainerInstanceID); err != nil {
			return err
		}
	}
	return nil
}

// ApplyHeartbeats takes the heartbeats that arrived since the previous tick and applies
// touchAgent to each agent that still exists. It returns the inputs it took.
func (t *TownTx) ApplyHeartbeats(ctx context.Context) (_ []HeartbeatInput, err error) {
	defer t.flushOnReturn(ctx, &err)
	var rows []dbsqlc.AgentHeartbeat
	if t.prefetched != nil && t.prefetched.heartbeats != nil {
		rows, t.prefetched.heartbeats = t.prefetched.heartbeats, nil
	} else if rows, err = t.q.HeartbeatListUnapplied(ctx, t.db, t.TownID); err != nil {
		return nil, fmt.Errorf("list heartbeats: %w", err)
	}
	inputs := make([]HeartbeatInput, 0, len(rows))
	for _, r := range rows {
		in := HeartbeatInput{
			AgentID: r.AgentID, Seq: r.Seq, ReceivedAt: r.ReceivedAt, LastEventType: deref(r.LastEventType),
			LastEventAt: r.LastEventAt, ContainerInstanceID: deref(r.ContainerInstanceID),
		}
		if r.ActiveTools != nil { // nil: the heartbeat did not say
			in.ActiveTools = decodeStrings(r.ActiveTools, nil)
		}
		if err := t.applyHeartbeat(ctx, in); err != nil {
			return nil, err
		}
		if err := t.noteContainerInstance(ctx, in.ContainerInstanceID); err != nil {
			return nil, err
		}
		if err := t.q.HeartbeatMarkApplied(ctx, t.db, dbsqlc.HeartbeatMarkAppliedParams{TownID: t.TownID, AgentID: r.AgentID, Seq: r.Seq}); err != nil {
			return nil, fmt.Errorf("mark heartbeat applied: %w", err)
		}
		inputs = append(inputs, in)
	}
	return inputs, nil
}

// applyHeartbeat is touchAgent (SPEC.md §2.14). An agent deleted since is ignored.
//
// The update is made to the agent in memory as well (agentInMemory, touchAgentInMemory).
// Heartbeats are applied outside any savepoint (a failure fails the tick), so the row in
// memory never has to be rolled back.
func (t *TownTx) applyHeartbeat(ctx context.Context, in HeartbeatInput) error {
	var tools []byte
	if in.ActiveTools != nil {
		tools = mustJSON(in.ActiveTools)
	}
	return t.agentInMemory(in.AgentID, func() error {
		err := t.q.AgentApplyHeartbeat(ctx, t.db, dbsqlc.AgentApplyHeartbeatParams{
			TownID: t.TownID, AgentID: in.AgentID, ReceivedAt: &in.ReceivedAt,
			LastEventType: ptr(in.LastEventType), LastEventAt: in.LastEventAt, ActiveTools: tools,
		})
		if err != nil {
			return fmt.Errorf("apply heartbeat of agent %s: %w", in.AgentID, err)
		}
		return nil
	}, func(a *reconciler.Agent) { touchAgentInMemory(a, in) })
}

// agentInMemory gives the database a write to agent id (write: one statement) and makes it
// to the agent as read as well (change), when the tick holds the town's agents as read,
// had not written the table before, and has not handed the snapshot out yet (the drain's
// writes, before the rules read the state): then the table does not count as written, and
// the drain's reads of agents and the rules' snapshot need no read of it again. An agent
// not among those read does not exist: the update changed nothing. When a savepoint around
// such a write rolls back, the table counts as written again (endSavepointScope). Each
// change must be exactly what its statement does to the row
// (TestDrainWritesToAgentsAreMadeInMemory, and CheckStateInMemory in every tick of the
// jobs tests).
func (t *TownTx) agentInMemory(id string, write func() error, change func(*reconciler.Agent)) error {
	wrote := t.wb.wrote // the statement marks the table written
	if err := write(); err != nil {
		return err
	}
	if t.state == nil || t.state.handedOut || wrote&stateAgents != 0 {
		return nil
	}
	if a := t.state.agent(id, wrote); a != nil {
		change(a)
	}
	t.wb.wrote = wrote
	t.inMemory++
	return nil
}

// compareAgents compares the agents in memory with the table's (read with the writes held
// back), for Store.CheckStateInMemory.
func compareAgents(mem, read []reconciler.Agent) error {
	utc := func(a reconciler.Agent) reconciler.Agent {
		a.LastActivityAt, a.LastEventAt, a.StalledAt, a.CreatedAt = a.LastActivityAt.UTC(), a.LastEventAt.UTC(), a.StalledAt.UTC(), a.CreatedAt.UTC()
		return a
	}
	if len(read) != len(mem) {
		return fmt.Errorf("agents in memory: %d, in the table: %d", len(mem), len(read))
	}
	for i := range read {
		if m, r := utc(mem[i]), utc(read[i]); !reflect.DeepEqual(m, r) {
			return fmt.Errorf("agent in memory differs from the table:\n memory %+v\n table  %+v", m, r)
		}
	}
	return nil
}

// touchAgentInMemory is AgentApplyHeartbeat on an agent as read: fresh activity, idle →
// working for a hooked agent, attempts reset, the SDK watermark and the active tools when
// the heartbeat gives them. Times are kept to the microsecond, as Postgres stores them.
func touchAgentInMemory(a *reconciler.Agent, in HeartbeatInput) {
	a.LastActivityAt = in.ReceivedAt.Truncate(time.Microsecond)
	if a.Status == reconciler.AgentIdle && a.HookBeadID != "" {
		a.Status = reconciler.AgentWorking
	}
	a.DispatchAttempts = 0
	if in.LastEventType != "" {
		a.LastEventType = in.LastEventType
	}
	if in.LastEventAt != nil {
		a.LastEventAt = in.LastEventAt.Truncate(time.Microsecond)
	}
	if in.ActiveTools != nil {
		a.ActiveTools = slices.Clone(in.ActiveTools)
	}
}

// TickRecord is what a tick writes about itself. Its row is stamped with the tick's
// clock (TownTx.Now).
type TickRecord struct {
	WallClock            time.Duration
	Drain                time.Duration
	Snapshot             time.Duration
	Reconcile            time.Duration
	Apply                time.Duration
	EventsDrained        int
	EventsFailed         int
	EventsDead           int
	Heartbeats           []HeartbeatInput
	ActionsEmitted       int
	ActionsSkipped       int
	ActionsByType        map[reconciler.ActionType]int
	SideEffectsAttempted int
	SideEffectsSucceeded int
	SideEffectsFailed    int
	InvariantViolations  int
	PendingEventCount    int
	NextTickAt           time.Time
	// OmitRow skips the reconciler_ticks row (the benchmark harness measures its cost);
	// the recorded inputs and the town's next tick are written regardless.
	OmitRow bool
	// What a faithful replay checks the tick against (tick_inputs, ISSUE 9): the events
	// it drained but did not apply, the actions it emitted, whether it changed the town
	// and the hash of the state it left.
	FailedSeqs   []int64
	Actions      []reconciler.Action
	StateChanged bool
	StateHash    uint64
	StateParts   []uint64 // the hash by part (reconciler.StateDigest)
	// Checkpointed: the tick took a checkpoint of the state it left (TownTx.Checkpoint).
	Checkpointed bool
	// Complete, when set, runs once the tick's rows are queued, on the tick's transaction:
	// its first statement goes out in the same batch as them (the River job's completion).
	Complete func(ctx context.Context, tx pgx.Tx) error
	// Commit, when set, commits the tick's transaction (a *PipelinedTx) in the round trip
	// of its last writes instead of leaving the commit to the caller.
	Commit *TickCommit
}

// TickCommit is a tick that commits with its last writes: COMMIT follows them in the
// same batch, and after it — outside the transaction, so that it sees what committed
// while the tick ran — the look for pending events a tick job does after committing
// (Store.HasPendingEventsAfter).
type TickCommit struct {
	// Recheck asks for that look: for events after the last one the tick drained, or
	// never tried.
	Recheck bool
	// Set by the commit: Committed once COMMIT succeeded; PendingAfter is the look's
	// answer, RecheckErr its error (the tick is committed regardless).
	Committed    bool
	PendingAfter bool
	RecheckErr   error
}

// Recorded reports whether the tick leaves a record for replay: it took an input or
// changed the town.
func (rec TickRecord) Recorded() bool {
	return len(rec.Heartbeats) > 0 || rec.EventsDrained > 0 || len(rec.Actions) > 0 || rec.StateChanged
}

// CheckpointDue reports whether a tick that leaves a record should also take a
// checkpoint: every `every` records, or when the last checkpoint is older than interval.
func (t *TownTx) CheckpointDue(every int, interval time.Duration) bool {
	if t.Town.CheckpointAt == nil {
		return true
	}
	return (every > 0 && int(t.Town.RecordsSinceCheckpoint)+1 >= every) || (interval > 0 && t.Now.Sub(*t.Town.CheckpointAt) >= interval)
}

// signed stores uint64 hashes in a bigint[] (the same bits).
func signed(us []uint64) []int64 {
	out := make([]int64, len(us))
	for i, u := range us {
		out[i] = int64(u)
	}
	return out
}

// nonNil is s, or an empty slice for nil (a JSON array, not null; a SQL array, not NULL).
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// sat16 and sat32 store a count in a reconciler_ticks column, saturating at the column's
// maximum: the row is a metric, and a tick that drained more than 32,767 of something
// is recorded as having drained "at least 32,767".
func sat16(n int) int16 { return int16(min(max(n, 0), math.MaxInt16)) }
func sat32(n int) int32 { return int32(min(max(n, 0), math.MaxInt32)) }

// micros is a phase duration in whole microseconds, saturating like sat32.
func micros(d time.Duration) int32 { return sat32(int(d.Microseconds())) }

// PendingEventCount counts the town's pending events after the drain: as LoadSnapshot
// read them, else now.
func (t *TownTx) PendingEventCount(ctx context.Context) (int, error) {
	if t.pendingCounted {
		return t.pendingCount, nil
	}
	n, err := t.q.EventCountPending(ctx, t.db, t.TownID)
	if err != nil {
		return 0, fmt.Errorf("count pending events: %w", err)
	}
	return int(n), nil
}

// Finish writes the tick's reconciler_ticks row and its recorded inputs, and schedules the
// town's next tick.
func (t *TownTx) Finish(ctx context.Context, rec TickRecord) error {
	if rec.OmitRow {
		return t.finishTown(ctx, rec)
	}
	row := dbsqlc.TickInsertParams{
		TickID: t.TickID, StartedAt: t.Now, TownID: t.TownID,
		WallClockUs: micros(rec.WallClock), DrainUs: micros(rec.Drain), SnapshotUs: micros(rec.Snapshot),
		ReconcileUs: micros(rec.Reconcile), ApplyUs: micros(rec.Apply),
		EventsDrained: sat32(rec.EventsDrained), ActionsEmitted: sat32(rec.ActionsEmitted),
		PendingEventCount: sat32(rec.PendingEventCount), NextTickMs: sat32(int(max(rec.NextTickAt.Sub(t.Now), 0).Milliseconds())),
		EventsFailed: sat16(rec.EventsFailed), EventsDead: sat16(rec.EventsDead),
		HeartbeatsApplied: sat16(len(rec.Heartbeats)), ActionsSkipped: sat16(rec.ActionsSkipped),
		SideEffectsAttempted: sat16(rec.SideEffectsAttempted), SideEffectsSucceeded: sat16(rec.SideEffectsSucceeded),
		SideEffectsFailed: sat16(rec.SideEffectsFailed), InvariantViolations: sat16(rec.InvariantViolations),
		ActionsByType: encodeActionCounts(rec.ActionsByType),
	}
	if rec.Recorded() {
		// The usual tick of a town with work: row, record and schedule in one statement.
		input, err := t.tickInput(rec)
		if err != nil {
			return err
		}
		if err := t.q.TickFinishRecorded(ctx, t.db, dbsqlc.TickFinishRecordedParams{
			TickID: row.TickID, StartedAt: row.StartedAt, TownID: row.TownID,
			WallClockUs: row.WallClockUs, DrainUs: row.DrainUs, SnapshotUs: row.SnapshotUs,
			ReconcileUs: row.ReconcileUs, ApplyUs: row.ApplyUs, EventsDrained: row.EventsDrained,
			ActionsEmitted: row.ActionsEmitted, PendingEventCount: row.PendingEventCount, NextTickMs: row.NextTickMs,
			EventsFailed: row.EventsFailed, EventsDead: row.EventsDead, HeartbeatsApplied: row.HeartbeatsApplied,
			ActionsSkipped: row.ActionsSkipped, SideEffectsAttempted: row.SideEffectsAttempted,
			SideEffectsSucceeded: row.SideEffectsSucceeded, SideEffectsFailed: row.SideEffectsFailed,
			InvariantViolations: row.InvariantViolations, ActionsByType: row.ActionsByType,
			Heartbeats: input.Heartbeats, FailedSeqs: input.FailedSeqs, Actions: input.Actions,
			StateHash: input.StateHash, StateParts: input.StateParts,
			NextTickAt: rec.NextTickAt, Checkpointed: rec.Checkpointed,
		}); err != nil {
			return fmt.Errorf("finish tick: %w", err)
		}
		return t.complete(ctx, rec)
	}
	if err := t.q.TickInsert(ctx, t.db, row); err != nil {
		return fmt.Errorf("insert tick row: %w", err)
	}
	return t.finishTown(ctx, rec)
}

// tickInput is the replay record of a tick (tick_inputs).
func (t *TownTx) tickInput(rec TickRecord) (dbsqlc.TickInputInsertParams, error) {
	actions, err := reconciler.EncodeActions(rec.Actions)
	if err != nil {
		return dbsqlc.TickInputInsertParams{}, err
	}
	return dbsqlc.TickInputInsertParams{
		TownID: t.TownID, TickID: t.TickID, ClockAt: t.Now, Heartbeats: mustJSON(nonNil(rec.Heartbeats)),
		FailedSeqs: nonNil(rec.FailedSeqs), Actions: mustJSON(actions), StateHash: int64(rec.StateHash),
		StateParts: signed(rec.StateParts),
	}, nil
}

// finishTown records the tick for replay and schedules the town's next tick. A tick that
// took no input and changed nothing (an idle town's) records nothing: the town's state is
// the one its last record names.
func (t *TownTx) finishTown(ctx context.Context, rec TickRecord) error {
	recorded := rec.Recorded()
	if recorded {
		input, err := t.tickInput(rec)
		if err != nil {
			return err
		}
		if err := t.q.TickInputInsert(ctx, t.db, input); err != nil {
			return fmt.Errorf("insert tick record: %w", err)
		}
	}
	if err := t.q.TownFinishTick(ctx, t.db, dbsqlc.TownFinishTickParams{
		TownID: t.TownID, Now: &t.Now, NextTickAt: rec.NextTickAt,
		Recorded: map[bool]int32{false: 0, true: 1}[recorded], Checkpointed: rec.Checkpointed, TickID: t.TickID,
	}); err != nil {
		return fmt.Errorf("finish tick: %w", err)
	}
	return t.complete(ctx, rec)
}

// Tx is the tick's transaction for code outside the TownTx (River's insert of the side-
// effect jobs): each of its statements goes out in one batch with the writes the tick
// holds back, instead of after a flush of its own.
func (t *TownTx) Tx() pgx.Tx { return wbTx{Tx: t.tx, wb: t.wb} }

// complete completes the tick's job (rec.Complete) and sends the writes held back, with
// the commit when rec.Commit asks for it.
func (t *TownTx) complete(ctx context.Context, rec TickRecord) error {
	if rec.Complete != nil {
		if err := rec.Complete(ctx, t.Tx()); err != nil {
			return err
		}
	}
	if rec.Commit != nil {
		return t.commitWithLastWrites(ctx, rec.Commit)
	}
	return t.Flush(ctx)
}

// commitWithLastWrites sends the writes held back, COMMIT and the re-check (c.Recheck)
// in one batch. A failed write skips the rest of the batch: nothing is committed and the
// caller rolls back.
func (t *TownTx) commitWithLastWrites(ctx context.Context, c *TickCommit) error {
	ptx, ok := t.tx.(*PipelinedTx)
	if !ok {
		return fmt.Errorf("a tick commits with its last writes only on a pipelined transaction, not %T", t.tx)
	}
	recheck := dbsqlc.EventHasPendingAfterParams{TownID: t.TownID, Seq: t.LastDrainedSeq()}
	var more pgx.Batch
	more.Queue("commit")
	if c.Recheck {
		rec := &recorder{}
		_, _ = t.q.EventHasPendingAfter(ctx, rec, recheck)
		more.QueuedQueries = append(more.QueuedQueries, rec.batch.QueuedQueries...)
	}
	br, err := t.wb.send(ctx, &more)
	if err != nil {
		return fmt.Errorf("tick writes: %w", err)
	}
	tag, err := br.Exec()
	if err == nil && tag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	if err != nil {
		_ = br.Close()
		return fmt.Errorf("commit tick: %w", err)
	}
	c.Committed = true
	if c.Recheck {
		c.PendingAfter, c.RecheckErr = t.q.EventHasPendingAfter(ctx, &player{br: br}, recheck)
	}
	if cerr := br.Close(); cerr != nil && c.RecheckErr == nil && c.Recheck {
		c.RecheckErr = cerr
	}
	if c.RecheckErr != nil {
		c.RecheckErr = fmt.Errorf("check pending events: %w", c.RecheckErr)
	}
	ptx.committed()
	return nil
}

// noteContainerInstance records the container instance a heartbeat came from; a heartbeat
// from a new instance ends a drain (the evicted container has been replaced).
func (t *TownTx) noteContainerInstance(ctx context.Context, instance string) error {
	last := deref(t.Town.ContainerInstanceID)
	if instance == "" || instance == last {
		return nil
	}
	if err := t.q.TownSetContainerInstance(ctx, t.db, dbsqlc.TownSetContainerInstanceParams{TownID: t.TownID, ContainerInstanceID: &instance}); err != nil {
		return fmt.Errorf("record container instance: %w", err)
	}
	t.Town.ContainerInstanceID = &instance
	if t.Town.Draining && last != "" {
		return t.clearDraining(ctx, "heartbeat from a new container instance")
	}
	return nil
}

// savepoint is a savepoint of the tick around one event or action. Its SAVEPOINT and
// RELEASE statements ride with the tick's held-back writes (writeBehind): a savepoint costs
// no round trip of its own. SAVEPOINT goes out with the scope's first read or with its
// writes; RELEASE with whatever the tick sends next. A scope that failed before anything
// was sent is dropped without a statement.
type savepoint struct {
	t    *TownTx
	name string
	// mark is where SAVEPOINT sits in the held-back batch while unsent.
	mark int
	// sent: SAVEPOINT has run (the savepoint exists); elided: the scope sent nothing at all.
	sent, elided bool
	// inMemory is the tick's count of writes made in memory when the savepoint began.
	inMemory int
}

// beginSavepoint begins a savepoint that the tick's statements run in until
// endSavepointScope; the caller then calls Commit or Rollback.
func (t *TownTx) beginSavepoint(ctx context.Context) (*savepoint, error) {
	t.wb.queueFeed(ctx) // rows logged before the scope are not the scope's
	t.spSeq++
	sp := &savepoint{t: t, name: "gt_sp_" + strconv.Itoa(t.spSeq), mark: len(t.wb.pending.QueuedQueries), inMemory: t.inMemory}
	t.wb.pending.Queue("SAVEPOINT " + sp.name)
	t.wb.sp = sp
	return sp, nil
}

// endSavepointScope ends the statements of a savepoint's work. When the work succeeded,
// its held-back writes are sent inside the savepoint (their failure is the work's
// failure); when it failed, they are dropped. The caller then releases or rolls back the
// savepoint.
func (t *TownTx) endSavepointScope(ctx context.Context, workErr error) error {
	sp := t.wb.sp
	t.wb.sp = nil
	if workErr == nil {
		t.wb.queueFeed(ctx) // the scope's feed rows go out inside it
		if !sp.sent && len(t.wb.pending.QueuedQueries) == sp.mark+1 {
			// Nothing ran in the scope: no savepoint needed.
			t.wb.pending.QueuedQueries = t.wb.pending.QueuedQueries[:sp.mark]
			sp.elided = true
			return nil
		}
		t.wb.sp = sp // the flush marks it sent
		workErr = t.wb.flush(ctx)
		t.wb.sp = nil
		if workErr == nil {
			return nil
		}
	}
	t.wb.feed = nil // the scope's feed rows (those before it were queued when it began)
	if t.inMemory != sp.inMemory {
		// Rows in memory carry writes the rollback undoes: the tables are the truth again.
		t.wb.wrote |= stateAgents
	}
	if sp.sent {
		t.wb.discard() // what is held back is the scope's
	} else if len(t.wb.pending.QueuedQueries) > sp.mark {
		t.wb.pending.QueuedQueries = t.wb.pending.QueuedQueries[:sp.mark] // its SAVEPOINT and writes never ran
	}
	return workErr
}

// Commit releases the savepoint, with the tick's next statements.
func (sp *savepoint) Commit(context.Context) error {
	if sp.sent {
		sp.t.wb.pending.Queue("RELEASE SAVEPOINT " + sp.name)
	}
	return nil
}

// Rollback undoes the savepoint's work: nothing to do when its SAVEPOINT never ran.
func (sp *savepoint) Rollback(ctx context.Context) error {
	if !sp.sent {
		return nil
	}
	_, err := sp.t.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+sp.name+"; RELEASE SAVEPOINT "+sp.name)
	return err
}

// Flush sends the writes the tick has held back. The tick calls it before statements that
// bypass the TownTx (River's job inserts, the job completion) and before it commits.
func (t *TownTx) Flush(ctx context.Context) error {
	if err := t.wb.flush(ctx); err != nil {
		return fmt.Errorf("tick writes: %w", err)
	}
	return nil
}

// flushOnReturn sends the writes an exported TownTx method held back before it returns,
// so its caller may commit or use tx directly. It keeps the method's own error.
func (t *TownTx) flushOnReturn(ctx context.Context, err *error) {
	if ferr := t.Flush(ctx); ferr != nil && *err == nil {
		*err = ferr
	}
}
