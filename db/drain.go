package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// DrainOptions bound Phase 0.
type DrainOptions struct {
	// MaxEvents is the most events one tick drains; the rest wait for the next tick.
	MaxEvents int
	// MaxAttempts is how often a failing event is tried before it goes dead.
	MaxAttempts int
	// FailEvent, when set, makes the apply of matching events fail (fault injection for
	// tests of the poison path).
	FailEvent func(Event) error
	// Only, when not nil, drains only these events (a replay re-runs exactly a recorded
	// tick's events; events appended meanwhile by the live system are not for it).
	Only []int64
}

// DrainResult summarises Phase 0.
type DrainResult struct {
	Drained int // events taken from the inbox
	Applied int
	Failed  int // failed and left pending for a retry
	Dead    int // failed for the last time
	// Outcomes of side effects reported back in this drain.
	SideEffectsSucceeded int
	SideEffectsFailed    int
	// Failures lists the errors of failed and dead events.
	Failures []EventFailure
	// More is set when the batch bound stopped the drain with events left.
	More bool
	// CreatedAt is when each applied event was recorded (event-to-applied latency), and
	// AppliedSeqs its sequence number.
	CreatedAt   []time.Time
	AppliedSeqs []int64
}

// EventFailure is one event that failed to apply.
type EventFailure struct {
	Event Event
	Err   error
	Dead  bool
}

// DrainEvents is Phase 0: it applies the town's pending events in sequence order. The
// whole batch first applies in one savepoint and is marked processed in one statement —
// the common case, a round trip per event. When any event of the batch fails, the batch is
// rolled back and re-applied event by event, each in a savepoint of its own: an event
// whose apply fails is rolled back alone and retried on later ticks until MaxAttempts,
// then marked dead; an event naming a missing entity is marked processed, as in the
// reference.
func (t *TownTx) DrainEvents(ctx context.Context, opts DrainOptions) (res DrainResult, err error) {
	defer t.flushOnReturn(ctx, &err)
	var rows []dbsqlc.TownEvent
	if pf := t.prefetched; pf != nil && pf.pending != nil && pf.drainBatch == opts.MaxEvents {
		rows, pf.pending = pf.pending, nil // read with the lock (BeginTick)
	} else if rows, err = t.q.EventListPending(ctx, t.db, dbsqlc.EventListPendingParams{TownID: t.TownID, MaxRows: int32(opts.MaxEvents + 1)}); err != nil {
		return res, fmt.Errorf("list pending events: %w", err)
	}
	if opts.Only != nil {
		rows = slices.DeleteFunc(rows, func(r dbsqlc.TownEvent) bool { return !slices.Contains(opts.Only, r.Seq) })
	}
	if len(rows) > opts.MaxEvents {
		rows, res.More = rows[:opts.MaxEvents], true
	}
	res.Drained = len(rows)
	if len(rows) == 0 {
		return res, nil
	}
	events := make([]Event, len(rows))
	for i, row := range rows {
		events[i] = eventFromInternal(row)
	}
	t.lastSeq = events[len(events)-1].Seq
	ok, err := t.applyBatch(ctx, events, opts.FailEvent)
	if err != nil {
		return res, err
	}
	if ok {
		seqs := make([]int64, len(events))
		for i, ev := range events {
			seqs[i] = ev.Seq
			res.applied(ev)
		}
		if err := t.q.EventMarkProcessedMany(ctx, t.db, dbsqlc.EventMarkProcessedManyParams{TownID: t.TownID, Seqs: seqs, Now: &t.Now, TickID: &t.TickID}); err != nil {
			return res, fmt.Errorf("mark %d events processed: %w", len(seqs), err)
		}
		return res, nil
	}
	for _, ev := range events {
		applyErr, err := t.applyInSavepoint(ctx, ev, opts.FailEvent)
		if err != nil {
			return res, err
		}
		var missingErr *MissingEntityError
		switch {
		case applyErr == nil || errors.As(applyErr, &missingErr):
			if applyErr != nil {
				t.logger.Warn("event names a missing entity; marked processed", "seq", ev.Seq, "type", ev.Type, "error", applyErr)
			}
			if err := t.q.EventMarkProcessed(ctx, t.db, dbsqlc.EventMarkProcessedParams{TownID: t.TownID, Seq: ev.Seq, Now: &t.Now, TickID: &t.TickID}); err != nil {
				return res, fmt.Errorf("mark event %d processed: %w", ev.Seq, err)
			}
			res.applied(ev)
		default:
			dead := int(ev.Attempts)+1 >= opts.MaxAttempts
			msg := applyErr.Error()
			if err := t.q.EventRecordFailure(ctx, t.db, dbsqlc.EventRecordFailureParams{
				TownID: t.TownID, Seq: ev.Seq, LastError: &msg, Dead: dead, Now: &t.Now, TickID: &t.TickID,
			}); err != nil {
				return res, fmt.Errorf("record failure of event %d: %w", ev.Seq, err)
			}
			if dead {
				res.Dead++
			} else {
				res.Failed++
			}
			res.Failures = append(res.Failures, EventFailure{Event: ev, Err: applyErr, Dead: dead})
		}
	}
	return res, nil
}

// applied counts an applied event.
func (r *DrainResult) applied(ev Event) {
	r.Applied++
	r.CreatedAt = append(r.CreatedAt, ev.CreatedAt)
	r.AppliedSeqs = append(r.AppliedSeqs, ev.Seq)
	switch reconciler.EventType(ev.Type) {
	case reconciler.EventAgentDispatched:
		r.SideEffectsSucceeded++
	case reconciler.EventAgentDispatchFailed:
		r.SideEffectsFailed++
	}
}

// applyBatch applies every event in one savepoint. It reports false, with the savepoint
// rolled back and no side effect kept, when any event fails (the caller then applies them
// one by one); err is a failure of the transaction itself.
func (t *TownTx) applyBatch(ctx context.Context, events []Event, fail func(Event) error) (ok bool, err error) {
	if len(events) == 1 {
		return false, nil // one event: the per-event path costs the same
	}
	sp, err := t.beginSavepoint(ctx)
	if err != nil {
		return false, fmt.Errorf("savepoint for %d events: %w", len(events), err)
	}
	effects := len(t.sideEffects)
	var applyErr error
	for _, ev := range events {
		if applyErr = t.applyOne(ctx, ev, fail); applyErr != nil {
			break
		}
	}
	applyErr = t.endSavepointScope(ctx, applyErr)
	if applyErr != nil {
		t.sideEffects = t.sideEffects[:effects]
		if err := sp.Rollback(ctx); err != nil {
			return false, fmt.Errorf("roll back batch of %d events: %w", len(events), err)
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	if err := sp.Commit(ctx); err != nil {
		return false, fmt.Errorf("release savepoint of %d events: %w", len(events), err)
	}
	return true, nil
}

// LastDrainedSeq is the sequence number of the last event the drain took (0: none).
func (t *TownTx) LastDrainedSeq() int64 { return t.lastSeq }

// applyInSavepoint applies one event inside a savepoint. applyErr is the event's own
// failure (its changes are rolled back); err is a failure of the transaction itself.
func (t *TownTx) applyInSavepoint(ctx context.Context, ev Event, fail func(Event) error) (applyErr, err error) {
	sp, err := t.beginSavepoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint for event %d: %w", ev.Seq, err)
	}
	effects := len(t.sideEffects)
	applyErr = t.endSavepointScope(ctx, t.applyOne(ctx, ev, fail))
	if applyErr != nil {
		t.sideEffects = t.sideEffects[:effects]
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("roll back event %d: %w", ev.Seq, err)
		}
		if ctx.Err() != nil { // a cancelled tick is not the event's fault
			return nil, ctx.Err()
		}
		return applyErr, nil
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("release savepoint of event %d: %w", ev.Seq, err)
	}
	return nil, nil
}

// applyOne applies one event (after the test hook's verdict, if any). A panic in its
// handler is the event's failure like an error: its savepoint is rolled back, its attempt
// counted, and it goes dead at the bound — a panic that escaped would fail every tick of
// the town at the same event, for good.
func (t *TownTx) applyOne(ctx context.Context, ev Event, fail func(Event) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			t.logger.Error("event handler panicked; the event counts as failed", "seq", ev.Seq, "type", ev.Type,
				"panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("event %d (%s): panic: %v", ev.Seq, ev.Type, p)
		}
	}()
	if fail != nil {
		if err := fail(ev); err != nil {
			return err
		}
	}
	return t.applyEvent(ctx, ev)
}

// applyEvent applies one event to the town's state (SPEC.md §3.3). Unknown types are a
// no-op.
func (t *TownTx) applyEvent(ctx context.Context, ev Event) error {
	h, ok := eventHandlers[reconciler.EventType(ev.Type)]
	if !ok {
		t.logger.Warn("event type has no handler; marked processed", "seq", ev.Seq, "type", ev.Type)
		return nil
	}
	return h(t, ctx, ev)
}

// eventHandler applies one event type.
type eventHandler func(t *TownTx, ctx context.Context, ev Event) error

// handle adapts a typed handler: it decodes the payload first.
func handle[P any](f func(t *TownTx, ctx context.Context, ev Event, p P) error) eventHandler {
	return func(t *TownTx, ctx context.Context, ev Event) error {
		var p P
		if err := decodePayload(ev, &p); err != nil {
			return err
		}
		return f(t, ctx, ev, p)
	}
}

// needsAgent wraps a handler that is a warned no-op without an agent id.
func needsAgent[P any](f func(t *TownTx, ctx context.Context, agentID string, p P) error) eventHandler {
	return handle(func(t *TownTx, ctx context.Context, ev Event, p P) error {
		if ev.AgentID == "" {
			t.logger.Warn("event without agent id; ignored", "seq", ev.Seq, "type", ev.Type)
			return nil
		}
		return f(t, ctx, ev.AgentID, p)
	})
}

// needsBead wraps a handler that is a warned no-op without a bead id.
func needsBead[P any](f func(t *TownTx, ctx context.Context, beadID string, p P) error) eventHandler {
	return handle(func(t *TownTx, ctx context.Context, ev Event, p P) error {
		if ev.BeadID == "" {
			t.logger.Warn("event without bead id; ignored", "seq", ev.Seq, "type", ev.Type)
			return nil
		}
		return f(t, ctx, ev.BeadID, p)
	})
}

func (*TownTx) noop(context.Context, Event) error { return nil }

// KnownEventTypes lists the event types a tick applies, sorted.
func KnownEventTypes() []reconciler.EventType {
	out := make([]reconciler.EventType, 0, len(eventHandlers))
	for t := range eventHandlers {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

var eventHandlers map[reconciler.EventType]eventHandler

func init() {
	eventHandlers = map[reconciler.EventType]eventHandler{
		reconciler.EventBeadCreated: handle(func(t *TownTx, ctx context.Context, ev Event, p reconciler.BeadCreatedPayload) error {
			return t.applyBeadCreated(ctx, ev.BeadID, p)
		}),
		reconciler.EventRigCreated: handle(func(t *TownTx, ctx context.Context, _ Event, p reconciler.RigCreatedPayload) error {
			return t.applyRigCreated(ctx, p)
		}),
		reconciler.EventRigUpdated:             handle((*TownTx).applyRigUpdated),
		reconciler.EventTownConfigUpdated:      handle((*TownTx).applyTownConfig),
		reconciler.EventAgentDone:              needsAgent((*TownTx).agentDone),
		reconciler.EventAgentCompleted:         needsAgent((*TownTx).agentCompleted),
		reconciler.EventAgentDispatched:        handle((*TownTx).agentDispatched),
		reconciler.EventAgentDispatchFailed:    (*TownTx).noop, // recovery is the rules' (A1, B3, R6); the event is the record
		reconciler.EventAgentStopped:           (*TownTx).noop,
		reconciler.EventContainerStatus:        needsAgent((*TownTx).containerStatus),
		reconciler.EventContainerEviction:      handle((*TownTx).containerEviction),
		reconciler.EventContainerReady:         handle((*TownTx).containerReady),
		reconciler.EventNudgeTimeout:           (*TownTx).noop,
		reconciler.EventPRStatusChanged:        needsBead((*TownTx).prStatusChanged),
		reconciler.EventBeadCancelled:          needsBead((*TownTx).beadCancelled),
		reconciler.EventBeadStatusChanged:      needsBead((*TownTx).beadStatusChanged),
		reconciler.EventConvoyCreated:          needsBead((*TownTx).convoyCreated),
		reconciler.EventConvoyStarted:          handle((*TownTx).convoyStarted),
		reconciler.EventPRFeedbackDetected:     handle((*TownTx).prFeedbackDetected),
		reconciler.EventPRConflictDetected:     handle((*TownTx).prConflictDetected),
		reconciler.EventPRAutoMerge:            handle((*TownTx).prAutoMerge),
		reconciler.EventPRPolled:               handle((*TownTx).prPolled),
		reconciler.EventPRPollFailed:           handle((*TownTx).prPollFailed),
		reconciler.EventPRMergeFailed:          handle((*TownTx).prMergeFailed),
		reconciler.EventNudgeDelivered:         handle((*TownTx).nudgeDelivered),
		reconciler.EventNudgeDeliveryFailed:    (*TownTx).noop, // the nudge stays queued for the agent to pull
		reconciler.EventMailDelivered:          handle((*TownTx).mailDelivered),
		reconciler.EventMailDeliveryFailed:     handle((*TownTx).mailDeliveryFailed),
		reconciler.EventEscalationAcknowledged: needsBead((*TownTx).escalationAcknowledged),
	}
}

func decodePayload(ev Event, v any) error {
	if err := json.Unmarshal(ev.Payload, v); err != nil {
		return fmt.Errorf("decode %s payload: %w", ev.Type, err)
	}
	return nil
}
