package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// NewEvent is a fact to append to a town's inbox.
type NewEvent struct {
	ID      string // generated when empty
	Type    reconciler.EventType
	AgentID string
	BeadID  string
	Payload any // JSON-encoded; nil is {}
	// IdempotencyKey makes a repeated append (a retried side-effect job) insert nothing.
	IdempotencyKey string
}

// AppendedEvent identifies an appended event.
type AppendedEvent struct {
	Seq int64  `json:"seq"`
	ID  string `json:"event_id"`
	// Duplicate is set when the idempotency key was already used: nothing was appended.
	Duplicate bool `json:"duplicate,omitempty"`
}

// ErrTownNotFound is returned when an event or heartbeat names a town that does not exist.
var ErrTownNotFound = errors.New("town not found")

// eventInsertParams encodes an event for EventInsert.
func eventInsertParams(townID string, ev NewEvent) (dbsqlc.EventInsertParams, error) {
	payload := []byte("{}")
	if ev.Payload != nil {
		var err error
		if payload, err = json.Marshal(ev.Payload); err != nil {
			return dbsqlc.EventInsertParams{}, fmt.Errorf("encode %s payload: %w", ev.Type, err)
		}
	}
	id := ev.ID
	if id == "" {
		id = NewID()
	}
	return dbsqlc.EventInsertParams{
		TownID: townID, EventID: id, EventType: string(ev.Type), AgentID: ptr(ev.AgentID),
		BeadID: ptr(ev.BeadID), Payload: payload, IdempotencyKey: ptr(ev.IdempotencyKey),
	}, nil
}

// AppendEvents appends events in order on q, in one round trip.
func (s *Store) AppendEvents(ctx context.Context, q Querier, townID string, evs []NewEvent) ([]AppendedEvent, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	if len(evs) == 1 {
		a, err := s.AppendEvent(ctx, q, townID, evs[0])
		return []AppendedEvent{a}, err
	}
	var p pipeline
	out, err := s.appendSteps(ctx, &p, townID, evs)
	if err != nil {
		return nil, err
	}
	if err := p.run(ctx, q); err != nil {
		return nil, appendError(len(evs), err)
	}
	return out, nil
}

// AppendEventsJoinTick is AppendEvents followed by JoinTick, in one round trip. On the
// pool rather than a transaction the round trip is its own transaction, committed when
// it ends: one statement for one event, a pipeline (one implicit transaction: one Sync)
// for several; no BEGIN and COMMIT round trips. A waiting job it share-locks stays
// locked until the events commit, as in a transaction of the caller's. With tick set, a
// one-event append also inserts that tick job when the town has neither a waiting nor a
// running tick (TickState.EnqueuedJob); several events leave that to the caller.
func (s *Store) AppendEventsJoinTick(ctx context.Context, q Querier, townID string, evs []NewEvent, tick *TickJob) ([]AppendedEvent, TickState, error) {
	if len(evs) == 1 {
		return s.appendOneJoinTick(ctx, q, townID, evs[0], tick)
	}
	var (
		p  pipeline
		st TickState
	)
	out, err := s.appendSteps(ctx, &p, townID, evs)
	if err != nil {
		return nil, st, err
	}
	p.add(func(q Querier) error { return joinTick(ctx, q, townID, &st) })
	if err := p.run(ctx, q); err != nil {
		return nil, st, appendError(len(evs), err)
	}
	return out, st, nil
}

// appendOneJoinTickSQL is EventInsert, joinTick's look for the town's tick jobs and —
// for a town with neither a waiting nor a running tick — the insert of its tick job, in
// one statement: most appends carry one event, and a statement fewer is what a busy
// server has to spare. The CTEs see one snapshot; the waiting job is share-locked as in
// joinTick. The tick job row is what River's insert of it would write ($9–$15, see
// TickJob), and conflicts as River's insert does on River's unique index: a tick job of
// the town in another unique state (scheduled, retryable, or one this snapshot does not
// see yet) makes it insert nothing. $8 is the town id as the tick job's args hold it
// (text), $1 the same as a uuid; an empty $10 (kind) inserts no job.
const appendOneJoinTickSQL = `WITH ins AS (
    INSERT INTO town_events (town_id, event_id, event_type, agent_id, bead_id, payload, idempotency_key, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, now())
    ON CONFLICT (town_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING seq
), waiting AS (
    SELECT id FROM river_job
    WHERE kind = 'tick_town' AND state = 'available' AND args ->> 'town_id' = $8
    LIMIT 1 FOR SHARE SKIP LOCKED
), running AS (
    SELECT id FROM river_job WHERE kind = 'tick_town' AND state = 'running' AND args ->> 'town_id' = $8
    ORDER BY id DESC LIMIT 1
), tick AS (
    INSERT INTO river_job (args, kind, max_attempts, priority, queue, state, unique_key, unique_states)
    SELECT $9::jsonb, $10::text, $11::smallint, $12::smallint, $13::text, 'available', $14::bytea, $15::integer::bit(8)
    WHERE $10::text <> '' AND NOT EXISTS (SELECT FROM waiting) AND NOT EXISTS (SELECT FROM running)
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND unique_states IS NOT NULL AND river_job_state_in_bitmask(unique_states, state)
        DO NOTHING
    RETURNING id
)
SELECT (SELECT seq FROM ins), (SELECT id FROM waiting), (SELECT id FROM running), (SELECT id FROM tick)`

// TickJob is the River job row of a town's tick, as River's own insert would write it:
// an append that finds no tick of its town inserts it in its statement (jobs computes it,
// and checks that River takes it for its own).
type TickJob struct {
	Args         []byte // the encoded job args
	Kind         string
	MaxAttempts  int16
	Priority     int16
	Queue        string
	UniqueKey    []byte
	UniqueStates byte // River's bitmask of the states the key is unique in
}

// appendOneJoinTick is AppendEventsJoinTick for one event, in one statement.
func (s *Store) appendOneJoinTick(ctx context.Context, q Querier, townID string, ev NewEvent, tick *TickJob) ([]AppendedEvent, TickState, error) {
	var st TickState
	p, err := eventInsertParams(townID, ev)
	if err != nil {
		return nil, st, err
	}
	if tick == nil {
		tick = &TickJob{Args: []byte("{}")}
	}
	var seq, waiting, running, enqueued *int64
	if err := q.QueryRow(ctx, appendOneJoinTickSQL, p.TownID, p.EventID, p.EventType, p.AgentID, p.BeadID,
		p.Payload, p.IdempotencyKey, townID, tick.Args, tick.Kind, tick.MaxAttempts, tick.Priority, tick.Queue,
		tick.UniqueKey, int32(tick.UniqueStates)).Scan(&seq, &waiting, &running, &enqueued); err != nil {
		return nil, st, appendError(1, err)
	}
	out := []AppendedEvent{{ID: p.EventID, Duplicate: seq == nil}}
	if seq != nil {
		out[0].Seq = *seq
	}
	switch {
	case waiting != nil:
		st.Waiting = true
	case running != nil:
		st.RunningJob = *running
	case enqueued != nil:
		st.EnqueuedJob = *enqueued
	}
	return out, st, nil
}

// appendSteps adds the insert of evs to p, one statement for them all (a statement per
// event costs a busy server several times as much); the results fill the returned slice
// as p runs.
func (s *Store) appendSteps(ctx context.Context, p *pipeline, townID string, evs []NewEvent) ([]AppendedEvent, error) {
	out := make([]AppendedEvent, len(evs))
	arg := dbsqlc.EventInsertManyParams{
		TownID: townID, EventIds: make([]string, len(evs)), EventTypes: make([]string, len(evs)),
		AgentIds: make([]string, len(evs)), BeadIds: make([]string, len(evs)), Payloads: make([][]byte, len(evs)),
		IdempotencyKeys: make([]string, len(evs)),
	}
	for i, ev := range evs {
		params, err := eventInsertParams(townID, ev)
		if err != nil {
			return nil, err
		}
		out[i].ID = params.EventID
		arg.EventIds[i], arg.EventTypes[i], arg.Payloads[i] = params.EventID, params.EventType, params.Payload
		arg.AgentIds[i], arg.BeadIds[i], arg.IdempotencyKeys[i] = deref(params.AgentID), deref(params.BeadID), deref(params.IdempotencyKey)
	}
	p.add(func(q Querier) error {
		rows, err := s.q.EventInsertMany(ctx, q, arg)
		if err != nil {
			return err
		}
		seqs := make(map[string]int64, len(rows))
		for _, r := range rows {
			seqs[r.EventID] = r.Seq
		}
		for i := range out {
			seq, ok := seqs[canonicalUUID(out[i].ID)]
			out[i].Seq, out[i].Duplicate = seq, !ok // no row: the idempotency key was used already
		}
		return nil
	})
	return out, nil
}

// appendError is the error of an append that failed: a missing town is ErrTownNotFound.
func appendError(n int, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23503" {
		return ErrTownNotFound
	}
	return fmt.Errorf("append %d events: %w", n, err)
}

// AppendEvent appends one event on q (usually a transaction that also wakes the town).
func (s *Store) AppendEvent(ctx context.Context, q Querier, townID string, ev NewEvent) (AppendedEvent, error) {
	params, err := eventInsertParams(townID, ev)
	if err != nil {
		return AppendedEvent{}, err
	}
	id := params.EventID
	row, err := s.q.EventInsert(ctx, q, params)
	if err != nil {
		if err := interpretError(err); errors.Is(err, ErrNotFound) {
			return AppendedEvent{ID: id, Duplicate: true}, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			return AppendedEvent{}, ErrTownNotFound
		}
		return AppendedEvent{}, fmt.Errorf("append %s event: %w", ev.Type, err)
	}
	return AppendedEvent{Seq: row.Seq, ID: row.EventID}, nil
}

// Event is a town_events row as the API shows it.
type Event struct {
	Seq         int64           `json:"seq"`
	ID          string          `json:"event_id"`
	Type        string          `json:"event_type"`
	AgentID     string          `json:"agent_id,omitempty"`
	BeadID      string          `json:"bead_id,omitempty"`
	Payload     json.RawMessage `json:"payload"`
	State       string          `json:"state"`
	Attempts    int32           `json:"attempts"`
	LastError   string          `json:"last_error,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	ProcessedAt *time.Time      `json:"processed_at,omitempty"`
	TickID      *int64          `json:"processed_tick_id,omitempty"`
}

func eventFromInternal(e dbsqlc.TownEvent) Event {
	return Event{
		Seq: e.Seq, ID: e.EventID, Type: e.EventType, AgentID: deref(e.AgentID), BeadID: deref(e.BeadID),
		Payload: e.Payload, State: e.State, Attempts: e.Attempts, LastError: deref(e.LastError),
		CreatedAt: e.CreatedAt, ProcessedAt: e.ProcessedAt, TickID: e.ProcessedTickID,
	}
}

// EventKeyExists reports whether the town has an event with the idempotency key: a
// side-effect job run again knows from it whether an earlier attempt reported.
func (s *Store) EventKeyExists(ctx context.Context, townID, key string) (bool, error) {
	ok, err := s.q.EventKeyExists(ctx, s.Pool, dbsqlc.EventKeyExistsParams{TownID: townID, IdempotencyKey: key})
	if err != nil {
		return false, fmt.Errorf("look for event %q: %w", key, err)
	}
	return ok, nil
}

// ListEvents lists a town's events, newest first; state filters when not empty.
func (s *Store) ListEvents(ctx context.Context, townID, state string, limit int) ([]Event, error) {
	rows, err := s.q.EventList(ctx, s.Pool, dbsqlc.EventListParams{TownID: townID, State: ptr(state), MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		out[i] = eventFromInternal(r)
	}
	return out, nil
}

// GetEvent reads one event by id.
func (s *Store) GetEvent(ctx context.Context, townID, eventID string) (Event, error) {
	e, err := s.q.EventGet(ctx, s.Pool, dbsqlc.EventGetParams{TownID: townID, EventID: eventID})
	if err != nil {
		return Event{}, interpretError(err)
	}
	return eventFromInternal(e), nil
}

// HasPendingEvents reports whether a town has a pending event.
func (s *Store) HasPendingEvents(ctx context.Context, townID string) (bool, error) {
	ok, err := s.q.EventHasPending(ctx, s.Pool, townID)
	if err != nil {
		return false, fmt.Errorf("check pending events: %w", err)
	}
	return ok, nil
}

// Heartbeat is what an agent reports every ~30 s.
type Heartbeat struct {
	LastEventType       string
	LastEventAt         time.Time
	ActiveTools         []string // nil: unchanged
	ContainerInstanceID string
}

// RecordHeartbeat stores an agent's heartbeat for the town's next tick. It is not an
// event: a tick takes what changed since the previous tick as a recorded input.
func (s *Store) RecordHeartbeat(ctx context.Context, townID, agentID string, hb Heartbeat) error {
	var tools []byte
	if hb.ActiveTools != nil {
		tools = mustJSON(hb.ActiveTools)
	}
	err := s.q.HeartbeatUpsert(ctx, s.Pool, dbsqlc.HeartbeatUpsertParams{
		TownID: townID, AgentID: agentID, LastEventType: ptr(hb.LastEventType), LastEventAt: timePtr(hb.LastEventAt),
		ActiveTools: tools, ContainerInstanceID: ptr(hb.ContainerInstanceID),
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23503" {
			return ErrTownNotFound
		}
		return fmt.Errorf("record heartbeat: %w", err)
	}
	return nil
}

// HasPendingEventsAfter reports whether a town has a pending event that a tick which
// drained up to seq did not try: a later one, or one never tried whatever its seq (an
// append that committed after a later append holds a lower seq).
func (s *Store) HasPendingEventsAfter(ctx context.Context, townID string, seq int64) (bool, error) {
	ok, err := s.q.EventHasPendingAfter(ctx, s.Pool, dbsqlc.EventHasPendingAfterParams{TownID: townID, Seq: seq})
	if err != nil {
		return false, fmt.Errorf("check pending events: %w", err)
	}
	return ok, nil
}

// RecordContainerStatus records a non-running container status observed for an agent
// (SPEC.md §3.1): "running" is never stored (it was most of the reference's event
// volume), and a status already pending for the agent is not stored twice. It reports
// whether an event was appended; the caller wakes the town.
func (s *Store) RecordContainerStatus(ctx context.Context, q Querier, townID, agentID, status, exitReason string) (bool, error) {
	if status == "running" || status == "" {
		return false, nil
	}
	dup, err := s.q.EventPendingContainerStatusExists(ctx, q, dbsqlc.EventPendingContainerStatusExistsParams{TownID: townID, AgentID: &agentID, Status: status})
	if err != nil {
		return false, fmt.Errorf("check pending container status: %w", err)
	}
	if dup {
		return false, nil
	}
	_, err = s.AppendEvent(ctx, q, townID, NewEvent{Type: reconciler.EventContainerStatus, AgentID: agentID,
		Payload: reconciler.ContainerStatusPayload{Status: status, ExitReason: exitReason}})
	return err == nil, err
}

// ObservableAgent names an agent whose container status is observed.
type ObservableAgent struct {
	TownID, AgentID string
}

// ListObservableAgents lists the fleet's working and stalled agents.
func (s *Store) ListObservableAgents(ctx context.Context, limit int) ([]ObservableAgent, error) {
	rows, err := s.q.AgentListObservable(ctx, s.Pool, int32(limit))
	if err != nil {
		return nil, fmt.Errorf("list observable agents: %w", err)
	}
	out := make([]ObservableAgent, len(rows))
	for i, r := range rows {
		out[i] = ObservableAgent{TownID: r.TownID, AgentID: r.AgentID}
	}
	return out, nil
}

// NotifyJobsInserted tells River's listening workers that a queue has new jobs: the
// notification River sends on insert (topic river_insert), sent outside the inserting
// transaction. The statement has no transaction id, so its commit writes no WAL and holds
// Postgres's notification lock only for an instant.
func (s *Store) NotifyJobsInserted(ctx context.Context, queue string) error {
	payload, err := json.Marshal(map[string]string{"queue": queue})
	if err != nil {
		return err
	}
	// Not expressible in sqlc: pg_notify's channel is River's, not one of our tables.
	if _, err := s.Pool.Exec(ctx, `SELECT pg_notify(current_schema() || '.river_insert', $1)`, string(payload)); err != nil {
		return fmt.Errorf("notify queue %s: %w", queue, err)
	}
	return nil
}

// TickState is what a town's tick jobs are doing.
type TickState struct {
	// Waiting: a tick job is available, now share-locked until the transaction ends.
	Waiting bool
	// RunningJob is the id of a running tick job (0: none).
	RunningJob int64
	// EnqueuedJob is the id of the tick job the append inserted (0: none).
	EnqueuedJob int64
}

// JoinTick looks for the town's tick jobs inside tx, the transaction that appended events,
// in one round trip.
// A waiting (available) job is share-locked until tx ends: River's fetch skips locked
// jobs, so that tick cannot start before tx commits and will drain tx's events. Otherwise
// it reports a running tick job, whose post-commit recheck will find tx's events if tx
// commits before the job completes (see IsTickRunning). (Raw SQL: river_job is River's
// table, unknown to sqlc; the index river_job_town_tick serves both lookups.)
func (s *Store) JoinTick(ctx context.Context, tx pgx.Tx, townID string) (TickState, error) {
	var st TickState
	err := joinTick(ctx, tx, townID, &st)
	return st, err
}

func joinTick(ctx context.Context, q Querier, townID string, st *TickState) error {
	var waiting, running *int64
	err := q.QueryRow(ctx, `WITH waiting AS (
    SELECT id FROM river_job
    WHERE kind = 'tick_town' AND state = 'available' AND args ->> 'town_id' = $1
    LIMIT 1 FOR SHARE SKIP LOCKED)
SELECT (SELECT id FROM waiting),
       (SELECT id FROM river_job WHERE kind = 'tick_town' AND state = 'running' AND args ->> 'town_id' = $1
        ORDER BY id DESC LIMIT 1)`, townID).Scan(&waiting, &running)
	if err != nil {
		return fmt.Errorf("look for a tick of town %s: %w", townID, err)
	}
	switch {
	case waiting != nil:
		st.Waiting = true
	case running != nil:
		st.RunningJob = *running
	}
	return nil
}

// IsTickRunning reports whether a tick job is still running. A tick job's row is deleted
// when its tick commits (CompleteTickJob), and the tick then re-checks for pending
// events: an event committed while the job still runs is found by that re-check.
func (s *Store) IsTickRunning(ctx context.Context, jobID int64) (bool, error) {
	var running bool
	err := s.Pool.QueryRow(ctx, `SELECT state = 'running' FROM river_job WHERE id = $1`, jobID).Scan(&running)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read tick job %d: %w", jobID, err)
	}
	return running, nil
}

// TownsWithTick returns which of the towns have a tick job waiting or running.
func (s *Store) TownsWithTick(ctx context.Context, townIDs []string) (map[string]bool, error) {
	rows, err := s.Pool.Query(ctx, `SELECT DISTINCT args ->> 'town_id' FROM river_job
WHERE kind = 'tick_town' AND state IN ('available', 'running') AND args ->> 'town_id' = ANY($1::text[])`, townIDs)
	if err != nil {
		return nil, fmt.Errorf("look for ticks of due towns: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// CompleteTickJob finishes a running tick job inside the tick's transaction: it deletes
// the job's row (migration 00013: marking it completed would write a new version of the
// row and an entry in each of river_job's indexes, for a row River's cleaner deletes soon
// after), in a statement Postgres plans once — River's own completion (a batch update over
// a dozen unnested arrays) was planned anew at each call and was the costliest statement
// of a busy fleet. River's executor completes the job again after the worker returns,
// which finds no row and does nothing. When the job is no longer running (rescued or
// cancelled meanwhile) the statement fails (gastown_complete_tick_job raises), and so does
// the tick's transaction. On a tick's transaction (TickRecord.Complete) the statement is
// held back with the tick's last writes and goes out with them — and with the commit
// (TickRecord.Commit): its error then surfaces there, before anything committed.
func CompleteTickJob(ctx context.Context, q Querier, jobID int64) error {
	// The name line lets a tick's write-behind hold it back (see deferrable).
	const sql = "-- name: CompleteTickJob :exec\nSELECT gastown_complete_tick_job($1)"
	if w, ok := q.(wbTx); ok {
		_, err := w.wb.Exec(ctx, sql, jobID)
		return err
	}
	if _, err := q.Exec(ctx, sql, jobID); err != nil {
		return fmt.Errorf("complete tick job %d: %w", jobID, err)
	}
	return nil
}

// CancelOrphanedTick finishes a running tick job whose worker died (its tick was rolled
// back with the worker's connection), so that the town's appends and the sweep stop
// counting on it. It reports whether this call did it. (Raw SQL on River's table: River
// offers no way to finish another client's running job before its rescuer runs.)
func (s *Store) CancelOrphanedTick(ctx context.Context, jobID int64) (bool, error) {
	tag, err := s.Pool.Exec(ctx, `UPDATE river_job SET state = 'cancelled', finalized_at = now(),
    errors = array_append(errors, jsonb_build_object('at', now(), 'attempt', attempt, 'error', 'worker died mid-tick; cancelled by gastown')) 
WHERE id = $1 AND state = 'running'`, jobID)
	if err != nil {
		return false, fmt.Errorf("cancel orphaned tick job %d: %w", jobID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// canonicalUUID is id as Postgres renders a uuid (lower case, hyphenated); an id it cannot
// parse is returned as it is.
func canonicalUUID(id string) string {
	var u pgtype.UUID
	if err := u.Scan(id); err != nil || !u.Valid {
		return id
	}
	return formatUUID(u.Bytes[:])
}
