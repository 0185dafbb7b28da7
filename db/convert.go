package db

import (
	"encoding/json"
	"time"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// ptr returns nil for the zero value, else a pointer to v: NULL for "unset".
func ptr[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only called on values built from JSON-able domain types.
		panic(err)
	}
	return b
}

func beadFromInternal(b dbsqlc.Bead) reconciler.Bead {
	out := reconciler.Bead{
		ID:                    b.BeadID,
		Type:                  reconciler.BeadType(b.Type),
		Status:                reconciler.BeadStatus(b.Status),
		Title:                 b.Title,
		Body:                  deref(b.Body),
		RigID:                 deref(b.RigID),
		ParentID:              deref(b.ParentBeadID),
		AssigneeID:            deref(b.AssigneeAgentBeadID),
		Priority:              reconciler.Priority(b.Priority),
		DispatchAttempts:      int(b.DispatchAttempts),
		LastDispatchAttemptAt: timeOrZero(b.LastDispatchAttemptAt),
		CreatedBy:             deref(b.CreatedBy),
		CreatedAt:             b.CreatedAt,
		UpdatedAt:             b.UpdatedAt,
		ClosedAt:              timeOrZero(b.ClosedAt),
	}
	out.Labels = decodeStrings(b.Labels)
	out.Metadata = decodeMetadata(b.Metadata)
	return out
}

func agentFromInternal(a dbsqlc.Agent) reconciler.Agent {
	out := reconciler.Agent{
		ID:               a.AgentID,
		Role:             reconciler.AgentRole(a.Role),
		Name:             a.Name,
		RigID:            deref(a.RigID),
		Identity:         a.Identity,
		Status:           reconciler.AgentStatus(a.Status),
		HookBeadID:       deref(a.CurrentHookBeadID),
		DispatchAttempts: int(a.DispatchAttempts),
		LastActivityAt:   timeOrZero(a.LastActivityAt),
		LastEventType:    deref(a.LastEventType),
		LastEventAt:      timeOrZero(a.LastEventAt),
		StalledAt:        timeOrZero(a.StalledAt),
		CreatedAt:        a.CreatedAt,
	}
	out.ActiveTools = decodeStrings(a.ActiveTools)
	return out
}

func rigFromInternal(r dbsqlc.Rig) reconciler.Rig {
	out := reconciler.Rig{ID: r.RigID, Name: r.Name, GitURL: r.GitUrl, DefaultBranch: r.DefaultBranch}
	_ = json.Unmarshal(r.Config, &out.Config)
	return out
}

func reviewFromInternal(r dbsqlc.ReviewMetadatum) reconciler.Review {
	return reconciler.Review{
		BeadID:              r.BeadID,
		Branch:              r.Branch,
		TargetBranch:        r.TargetBranch,
		PRURL:               deref(r.PrUrl),
		RetryCount:          int(r.RetryCount),
		AutoMergeReadySince: timeOrZero(r.AutoMergeReadySince),
	}
}

func convoyFromInternal(c dbsqlc.ConvoyMetadatum) reconciler.Convoy {
	return reconciler.Convoy{
		BeadID:        c.BeadID,
		TotalBeads:    int(c.TotalBeads),
		ClosedBeads:   int(c.ClosedBeads),
		LandedAt:      timeOrZero(c.LandedAt),
		FeatureBranch: deref(c.FeatureBranch),
		MergeMode:     deref(c.MergeMode),
		Staged:        c.Staged,
	}
}

func townConfig(raw []byte) reconciler.TownConfig {
	var c reconciler.TownConfig
	_ = json.Unmarshal(raw, &c) // validated on write
	return c
}

// decodeStrings decodes a JSON array of strings (labels, active tools); an empty one, the
// common case, skips the decoder (the snapshot decodes every bead of a town every tick).
func decodeStrings(raw []byte) []string {
	if isEmptyJSON(raw, '[', ']') {
		return []string{}
	}
	var out []string
	_ = json.Unmarshal(raw, &out) // CHECK constraints guarantee an array
	if out == nil {
		out = []string{}
	}
	return out
}

// decodeMetadata decodes a metadata object, skipping the decoder for an empty one.
func decodeMetadata(raw []byte) map[string]any {
	if isEmptyJSON(raw, '{', '}') {
		return map[string]any{}
	}
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out) // CHECK constraints guarantee an object
	return out
}

// isEmptyJSON reports whether raw is an empty array or object ("[]", "{}", as jsonb
// renders them), or absent.
func isEmptyJSON(raw []byte, open, closing byte) bool {
	return len(raw) == 0 || (len(raw) == 2 && raw[0] == open && raw[1] == closing)
}
