package db

import (
	"context"
	"fmt"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// BeadDetail is a bead with its edges and, for an MR, its review metadata.
type BeadDetail struct {
	Bead         reconciler.Bead         `json:"bead"`
	Dependencies []reconciler.Dependency `json:"dependencies"`
	Review       *reconciler.Review      `json:"review_metadata"`
}

// GetBeadDetail reads a bead with its dependencies and review metadata.
func (s *Store) GetBeadDetail(ctx context.Context, townID, beadID string) (BeadDetail, error) {
	b, err := s.GetBead(ctx, townID, beadID)
	if err != nil {
		return BeadDetail{}, err
	}
	d := BeadDetail{Bead: b, Dependencies: []reconciler.Dependency{}}
	deps, err := s.q.DependencyListOfBead(ctx, s.Pool, dbsqlc.DependencyListOfBeadParams{TownID: townID, BeadID: beadID})
	if err != nil {
		return d, fmt.Errorf("list dependencies: %w", err)
	}
	for _, e := range deps {
		d.Dependencies = append(d.Dependencies, reconciler.Dependency{BeadID: e.BeadID, DependsOnID: e.DependsOnBeadID, Type: reconciler.DependencyType(e.DependencyType)})
	}
	if b.Type == reconciler.BeadMergeRequest {
		rev, err := s.q.ReviewGet(ctx, s.Pool, dbsqlc.ReviewGetParams{TownID: townID, BeadID: beadID})
		if err == nil {
			r := reviewFromInternal(rev)
			d.Review = &r
		} else if !IsNotFound(interpretError(err)) {
			return d, fmt.Errorf("get review metadata: %w", err)
		}
	}
	return d, nil
}

// OpenMailFor lists the open message beads addressed to an agent.
func (s *Store) OpenMailFor(ctx context.Context, townID, agentID string) ([]reconciler.Bead, error) {
	rows, err := s.q.BeadListOpenMailFor(ctx, s.Pool, dbsqlc.BeadListOpenMailForParams{TownID: townID, Assignee: &agentID})
	if err != nil {
		return nil, fmt.Errorf("list mail: %w", err)
	}
	out := make([]reconciler.Bead, len(rows))
	for i, r := range rows {
		out[i] = beadFromInternal(&r)
	}
	return out, nil
}

// Nudge is a pending nudge as an agent reads it.
type Nudge struct {
	ID        string    `json:"nudge_id"`
	Message   string    `json:"message"`
	Mode      string    `json:"mode"`
	Priority  string    `json:"priority"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

// PendingNudges lists an agent's undelivered, unexpired nudges, urgent first.
func (s *Store) PendingNudges(ctx context.Context, townID, agentID string, now time.Time) ([]Nudge, error) {
	rows, err := s.q.NudgeListPending(ctx, s.Pool, dbsqlc.NudgeListPendingParams{TownID: townID, AgentID: agentID, Now: &now})
	if err != nil {
		return nil, fmt.Errorf("list nudges: %w", err)
	}
	out := make([]Nudge, len(rows))
	for i, n := range rows {
		out[i] = Nudge{ID: n.NudgeID, Message: n.Message, Mode: n.Mode, Priority: n.Priority, Source: n.Source, CreatedAt: n.CreatedAt}
	}
	return out, nil
}

// RecentReconcilerNudges lists, per agent and source, the newest GUPP nudge of a town
// since a time.
func (s *Store) RecentReconcilerNudges(ctx context.Context, townID string, since time.Time) ([]reconciler.NudgeRecord, error) {
	rows, err := s.q.NudgeListRecentBySource(ctx, s.Pool, dbsqlc.NudgeListRecentBySourceParams{TownID: townID, Since: since})
	if err != nil {
		return nil, fmt.Errorf("list recent nudges: %w", err)
	}
	out := make([]reconciler.NudgeRecord, len(rows))
	for i, n := range rows {
		out[i] = reconciler.NudgeRecord{AgentID: n.AgentID, Source: n.Source, LastAt: n.LastAt}
	}
	return out, nil
}
