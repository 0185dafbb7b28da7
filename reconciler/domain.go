package reconciler

import (
	"slices"
	"time"
)

// BeadType is the kind of a bead (SPEC.md §1.1).
type BeadType string

// Bead types.
const (
	BeadIssue        BeadType = "issue"
	BeadMessage      BeadType = "message"
	BeadEscalation   BeadType = "escalation"
	BeadMergeRequest BeadType = "merge_request"
	BeadConvoy       BeadType = "convoy"
	BeadMolecule     BeadType = "molecule"
	BeadAgent        BeadType = "agent"
)

// Valid reports whether t is a known bead type.
func (t BeadType) Valid() bool {
	switch t {
	case BeadIssue, BeadMessage, BeadEscalation, BeadMergeRequest, BeadConvoy, BeadMolecule, BeadAgent:
		return true
	}
	return false
}

// BeadStatus is the life-cycle status of a bead. Closed and failed are terminal and
// immutable.
type BeadStatus string

// Bead statuses.
const (
	StatusOpen       BeadStatus = "open"
	StatusInProgress BeadStatus = "in_progress"
	StatusInReview   BeadStatus = "in_review"
	StatusClosed     BeadStatus = "closed"
	StatusFailed     BeadStatus = "failed"
)

// Terminal reports whether s is closed or failed.
func (s BeadStatus) Terminal() bool { return s == StatusClosed || s == StatusFailed }

// Valid reports whether s is a known status.
func (s BeadStatus) Valid() bool {
	switch s {
	case StatusOpen, StatusInProgress, StatusInReview, StatusClosed, StatusFailed:
		return true
	}
	return false
}

// Priority of a bead.
type Priority string

// Priorities.
const (
	PriorityLow      Priority = "low"
	PriorityMedium   Priority = "medium"
	PriorityHigh     Priority = "high"
	PriorityCritical Priority = "critical"
)

// Valid reports whether p is a known priority.
func (p Priority) Valid() bool {
	switch p {
	case PriorityLow, PriorityMedium, PriorityHigh, PriorityCritical:
		return true
	}
	return false
}

// AgentRole is what an agent does.
type AgentRole string

// Agent roles.
const (
	RolePolecat  AgentRole = "polecat"
	RoleRefinery AgentRole = "refinery"
	RoleMayor    AgentRole = "mayor"
	RoleWitness  AgentRole = "witness"
)

// AgentStatus is the operational status of an agent.
type AgentStatus string

// Agent statuses.
const (
	AgentIdle    AgentStatus = "idle"
	AgentWorking AgentStatus = "working"
	AgentWaiting AgentStatus = "waiting"
	AgentStalled AgentStatus = "stalled"
	AgentDead    AgentStatus = "dead"
)

// DependencyType is the kind of a bead_dependencies edge.
type DependencyType string

// Dependency types. For an edge (BeadID, DependsOnID):
const (
	// DepBlocks: BeadID is blocked by DependsOnID.
	DepBlocks DependencyType = "blocks"
	// DepTracks: BeadID is tracked by / belongs to DependsOnID (issue → convoy,
	// MR → source issue, landing MR → convoy).
	DepTracks DependencyType = "tracks"
	// DepParentChild is declared by the reference and not used by the rules.
	DepParentChild DependencyType = "parent-child"
)

// Labels with reconciler meaning (SPEC.md §2.13).
const (
	LabelMergeRequest   = "gt:merge-request"
	LabelConvoy         = "gt:convoy"
	LabelRework         = "gt:rework"
	LabelPRFeedback     = "gt:pr-feedback"
	LabelPRConflict     = "gt:pr-conflict"
	LabelPRFixup        = "gt:pr-fixup"
	LabelTriageRequest  = "gt:triage-request"
	LabelTriage         = "gt:triage"
	LabelHeld           = "gt:held"
	LabelEscalation     = "gt:escalation"
	LabelMessage        = "gt:message"
	LabelMolecule       = "gt:molecule"
	LabelMoleculeStep   = "gt:molecule-step"
	AssigneeSystem      = "system"
	CreatedBySystem     = "system"
	CreatedByPatrol     = "patrol"
	MergeModeThenLand   = "review-then-land"
	MergeModeAndMerge   = "review-and-merge"
	MergeStrategyDirect = "direct"
	MergeStrategyPR     = "pr"
)

// Bead is one row of beads. Zero times stand for NULL.
type Bead struct {
	ID                    string         `json:"bead_id"`
	Type                  BeadType       `json:"type"`
	Status                BeadStatus     `json:"status"`
	Title                 string         `json:"title"`
	Body                  string         `json:"body,omitempty"`
	RigID                 string         `json:"rig_id,omitempty"`
	ParentID              string         `json:"parent_bead_id,omitempty"`
	AssigneeID            string         `json:"assignee_agent_bead_id,omitempty"`
	Priority              Priority       `json:"priority"`
	Labels                []string       `json:"labels"`
	Metadata              map[string]any `json:"metadata"`
	DispatchAttempts      int            `json:"dispatch_attempts"`
	LastDispatchAttemptAt time.Time      `json:"last_dispatch_attempt_at,omitzero"`
	CreatedBy             string         `json:"created_by,omitempty"`
	CreatedAt             time.Time      `json:"created_at"`
	UpdatedAt             time.Time      `json:"updated_at"`
	ClosedAt              time.Time      `json:"closed_at,omitzero"`
}

// HasLabel reports whether the bead carries the label.
func (b Bead) HasLabel(label string) bool { return slices.Contains(b.Labels, label) }

// MetaString returns a string metadata value, or "".
func (b Bead) MetaString(key string) string {
	s, _ := b.Metadata[key].(string)
	return s
}

// MetaTruthy reports whether a metadata value is set to something true-ish (true, a
// non-zero number, a non-empty string other than "0"/"false"), as the reference's
// SQLite-flavoured flags are.
func (b Bead) MetaTruthy(key string) bool {
	switch v := b.Metadata[key].(type) {
	case bool:
		return v
	case float64:
		return v != 0
	case int:
		return v != 0
	case string:
		return v != "" && v != "0" && v != "false"
	}
	return false
}

// MetaInt reads a number stored in metadata, or 0.
func (b Bead) MetaInt(key string) int {
	switch v := b.Metadata[key].(type) {
	case float64:
		return int(v)
	case int:
		return v
	}
	return 0
}

// Agent is an agent bead joined with its agents satellite row. Zero times stand for NULL.
type Agent struct {
	ID               string      `json:"agent_id"`
	Role             AgentRole   `json:"role"`
	Name             string      `json:"name"`
	RigID            string      `json:"rig_id,omitempty"`
	Identity         string      `json:"identity"`
	Status           AgentStatus `json:"status"`
	HookBeadID       string      `json:"current_hook_bead_id,omitempty"`
	DispatchAttempts int         `json:"dispatch_attempts"`
	LastActivityAt   time.Time   `json:"last_activity_at,omitzero"`
	LastEventType    string      `json:"last_event_type,omitempty"`
	LastEventAt      time.Time   `json:"last_event_at,omitzero"`
	ActiveTools      []string    `json:"active_tools"`
	StalledAt        time.Time   `json:"stalled_at,omitzero"`
	CreatedAt        time.Time   `json:"created_at"`
}

// Rig is a git repository attached to a town.
type Rig struct {
	ID            string    `json:"rig_id"`
	Name          string    `json:"name"`
	GitURL        string    `json:"git_url"`
	DefaultBranch string    `json:"default_branch"`
	Config        RigConfig `json:"config"`
}

// Dependency is one bead_dependencies edge.
type Dependency struct {
	BeadID      string         `json:"bead_id"`
	DependsOnID string         `json:"depends_on_bead_id"`
	Type        DependencyType `json:"dependency_type"`
}

// Review is the review_metadata satellite of a merge_request bead.
type Review struct {
	BeadID              string    `json:"bead_id"`
	Branch              string    `json:"branch"`
	TargetBranch        string    `json:"target_branch"`
	PRURL               string    `json:"pr_url,omitempty"`
	RetryCount          int       `json:"retry_count"`
	AutoMergeReadySince time.Time `json:"auto_merge_ready_since,omitzero"`
}

// Convoy is the convoy_metadata satellite of a convoy bead.
type Convoy struct {
	BeadID        string    `json:"bead_id"`
	TotalBeads    int       `json:"total_beads"`
	ClosedBeads   int       `json:"closed_beads"`
	LandedAt      time.Time `json:"landed_at,omitzero"`
	FeatureBranch string    `json:"feature_branch,omitempty"`
	MergeMode     string    `json:"merge_mode,omitempty"`
	Staged        bool      `json:"staged"`
}
