package db

import (
	"context"
	"fmt"
	"strconv"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// RecordViolations keeps invariant_violations current with this tick's findings: a new
// violation opens an episode, a persisting one is counted, one that stopped is resolved.
// It returns the violations that started in this tick — the ones to report.
func (t *TownTx) RecordViolations(ctx context.Context, found []reconciler.Violation) (_ []reconciler.Violation, err error) {
	defer t.flushOnReturn(ctx, &err)
	open := t.openViolations // read with the snapshot
	if open == nil {
		if open, err = t.q.ViolationListOpen(ctx, t.db, t.TownID); err != nil {
			return nil, fmt.Errorf("list open violations: %w", err)
		}
	}
	t.openViolations = nil
	key := func(inv int32, subject string) string { return strconv.Itoa(int(inv)) + "/" + subject }
	byKey := make(map[string]dbsqlc.InvariantViolation, len(open))
	for _, o := range open {
		byKey[key(o.Invariant, o.SubjectID)] = o
	}
	var started []reconciler.Violation
	for _, v := range found {
		k := key(int32(v.Invariant), v.SubjectID)
		if o, ok := byKey[k]; ok {
			delete(byKey, k)
			if err := t.q.ViolationSeen(ctx, t.db, dbsqlc.ViolationSeenParams{TownID: t.TownID, ViolationID: o.ViolationID, Message: v.Message, Now: t.Now}); err != nil {
				return nil, fmt.Errorf("update violation: %w", err)
			}
			continue
		}
		if err := t.q.ViolationOpen(ctx, t.db, dbsqlc.ViolationOpenParams{
			TownID: t.TownID, Invariant: int32(v.Invariant), SubjectID: v.SubjectID, Message: v.Message, Now: t.Now,
		}); err != nil {
			return nil, fmt.Errorf("open violation: %w", err)
		}
		started = append(started, v)
	}
	for _, o := range byKey {
		if err := t.q.ViolationResolve(ctx, t.db, dbsqlc.ViolationResolveParams{TownID: t.TownID, ViolationID: o.ViolationID, Now: &t.Now}); err != nil {
			return nil, fmt.Errorf("resolve violation: %w", err)
		}
	}
	return started, nil
}
