// Package agentrt is the agent runtime adapter: the interface through which side-effect
// jobs start and stop agents, and a simulator whose agents heartbeat, work and report
// back on their own (for `gastown dev`, benchmarks and end-to-end tests).
package agentrt

import (
	"context"
	"errors"
	"time"

	"gastown/reconciler"
)

// StartRequest asks the runtime to start an agent on a bead.
type StartRequest struct {
	TownID        string               `json:"town_id"`
	AgentID       string               `json:"agent_id"`
	AgentName     string               `json:"agent_name"`
	Role          reconciler.AgentRole `json:"role"`
	BeadID        string               `json:"bead_id"`
	BeadTitle     string               `json:"bead_title"`
	BeadBody      string               `json:"bead_body,omitempty"`
	RigID         string               `json:"rig_id,omitempty"`
	GitURL        string               `json:"git_url,omitempty"`
	DefaultBranch string               `json:"default_branch,omitempty"`
	Branch        string               `json:"branch,omitempty"`        // the MR branch, for a refinery
	TargetBranch  string               `json:"target_branch,omitempty"` // where the work lands
	MergeStrategy string               `json:"merge_strategy,omitempty"`
	PRURL         string               `json:"pr_url,omitempty"`
	ReviewMode    string               `json:"review_mode,omitempty"`
	SourceAgentID string               `json:"source_agent_id,omitempty"`
	Prompt        string               `json:"prompt,omitempty"`
	// CallbackURL is the base URL of the gastown API the agent reports to.
	CallbackURL string `json:"callback_url,omitempty"`
	// Token is the agent's own bearer token for its callbacks (heartbeat, done,
	// completed): it names this town and this agent only, and expires.
	Token string `json:"token,omitempty"`
}

// Runtime starts and stops agents. A start of an agent that is already running counts
// as started.
type Runtime interface {
	StartAgent(ctx context.Context, req StartRequest) error
	StopAgent(ctx context.Context, townID, agentID string) error
	// SendMessage delivers a message (a nudge or mail) to a running agent.
	SendMessage(ctx context.Context, townID, agentID, message string) error
	// Status reports an agent's container status: running, starting, exited, not_found,
	// unknown, …
	Status(ctx context.Context, townID, agentID string) string
}

// Reporter is how agents report back to gastown: the same facts an agent's HTTP callbacks
// carry.
type Reporter interface {
	Heartbeat(ctx context.Context, townID, agentID string, a Activity) error
	Done(ctx context.Context, townID, agentID string, p reconciler.AgentDonePayload) error
	Completed(ctx context.Context, townID, agentID string, p reconciler.AgentCompletedPayload) error
}

// Activity is the SDK activity an agent's heartbeat carries: the watermark GUPP measures
// inactivity from, and the tools running now.
type Activity struct {
	LastEventType string
	LastEventAt   time.Time
	ActiveTools   []string
}

// PermanentError marks a runtime failure that retrying cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}
