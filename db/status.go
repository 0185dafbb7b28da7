package db

import (
	"context"
	"fmt"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// TownStatus is what an operator looks at first (SPEC.md §8.1).
type TownStatus struct {
	Town         Town
	Agents       []reconciler.Agent
	LiveBeads    []reconciler.Bead
	BeadCounts   map[string]int // by status, agents and messages excluded
	LastTick     *Tick
	RecentEvents []BeadEvent
	// RecentNudges counts reconciler nudges of the last hour by source.
	RecentNudges map[string]int
	Pending      int
}

// BeadEvent is one entry of the activity feed.
type BeadEvent struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	BeadID   string    `json:"bead_id"`
	AgentID  string    `json:"agent_id,omitempty"`
	OldValue string    `json:"old_value,omitempty"`
	NewValue string    `json:"new_value,omitempty"`
}

// TownStatus reads a town's status.
func (s *Store) TownStatus(ctx context.Context, townID string, now time.Time) (TownStatus, error) {
	var st TownStatus
	t, err := s.GetTown(ctx, townID)
	if err != nil {
		return st, err
	}
	st.Town = t
	if st.Agents, err = s.ListAgents(ctx, townID); err != nil {
		return st, err
	}
	live, err := s.q.BeadListLive(ctx, s.Pool, dbsqlc.BeadListLiveParams{TownID: townID, MaxRows: 500})
	if err != nil {
		return st, fmt.Errorf("list live beads: %w", err)
	}
	for _, b := range live {
		st.LiveBeads = append(st.LiveBeads, beadFromInternal(&b))
	}
	counts, err := s.q.BeadCountByStatus(ctx, s.Pool, townID)
	if err != nil {
		return st, fmt.Errorf("count beads: %w", err)
	}
	st.BeadCounts = map[string]int{}
	for _, c := range counts {
		st.BeadCounts[c.Status] = int(c.N)
	}
	ticks, err := s.ListTicks(ctx, townID, 1)
	if err != nil {
		return st, err
	}
	if len(ticks) > 0 {
		st.LastTick = &ticks[0]
	}
	evs, err := s.q.BeadEventListRecent(ctx, s.Pool, dbsqlc.BeadEventListRecentParams{TownID: townID, MaxRows: 20})
	if err != nil {
		return st, fmt.Errorf("list bead events: %w", err)
	}
	for _, e := range evs {
		st.RecentEvents = append(st.RecentEvents, BeadEvent{Time: e.CreatedAt, Type: e.EventType, BeadID: e.BeadID,
			AgentID: deref(e.AgentID), OldValue: deref(e.OldValue), NewValue: deref(e.NewValue)})
	}
	nudges, err := s.q.NudgeListRecentBySource(ctx, s.Pool, dbsqlc.NudgeListRecentBySourceParams{TownID: townID, Since: now.Add(-time.Hour)})
	if err != nil {
		return st, fmt.Errorf("list nudges: %w", err)
	}
	st.RecentNudges = map[string]int{}
	for _, n := range nudges {
		st.RecentNudges[n.Source]++
	}
	n, err := s.q.EventCountPending(ctx, s.Pool, townID)
	if err != nil {
		return st, fmt.Errorf("count pending events: %w", err)
	}
	st.Pending = int(n)
	return st, nil
}

// ReplayResult is one event re-applied by a reference-style replay.
type ReplayResult struct {
	Event Event  `json:"event"`
	Error string `json:"error,omitempty"`
}

// ReplayWindow re-applies every event created in [from, to], whatever its state, on the
// current state (SPEC.md §8.3), each in a savepoint; nothing is marked processed. The
// caller rolls the transaction back.
func (t *TownTx) ReplayWindow(ctx context.Context, from, to time.Time, limit int) (_ []ReplayResult, err error) {
	defer t.flushOnReturn(ctx, &err)
	rows, err := t.q.EventListWindow(ctx, t.db, dbsqlc.EventListWindowParams{TownID: t.TownID, FromAt: from, ToAt: to, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list events to replay: %w", err)
	}
	out := make([]ReplayResult, 0, len(rows))
	for _, r := range rows {
		ev := eventFromInternal(r)
		applyErr, err := t.applyInSavepoint(ctx, ev, nil)
		if err != nil {
			return out, err
		}
		res := ReplayResult{Event: ev}
		if applyErr != nil {
			res.Error = applyErr.Error()
		}
		out = append(out, res)
	}
	return out, nil
}
