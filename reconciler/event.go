package reconciler

// EventType names a town event (SPEC.md §3.2, plus the user-intent and side-effect-outcome
// facts that "one writer" needs: DESIGN.md §1).
type EventType string

// Event types applied by ticks.
const (
	EventAgentDone           EventType = "agent_done"
	EventAgentCompleted      EventType = "agent_completed"
	EventBeadCreated         EventType = "bead_created"
	EventRigCreated          EventType = "rig_created"
	EventAgentDispatched     EventType = "agent_dispatched"
	EventAgentDispatchFailed EventType = "agent_dispatch_failed"
)

// AgentDonePayload is the payload of agent_done: the agent finished its hooked bead.
type AgentDonePayload struct {
	Branch  string `json:"branch"`
	PRURL   string `json:"pr_url,omitempty"`
	Summary string `json:"summary,omitempty"`
}

// AgentCompletedPayload is the payload of agent_completed: the agent's process exited.
type AgentCompletedPayload struct {
	Status string `json:"status"` // "completed" or "failed"
	Reason string `json:"reason,omitempty"`
}

// BeadCreatedPayload is the payload of bead_created. In the reference the event is an
// audit record of a bead the RPC already wrote; here it carries the bead, and applying it
// creates the bead (a no-op when it exists), so every write happens inside a tick.
type BeadCreatedPayload struct {
	Type      BeadType       `json:"bead_type"`
	Title     string         `json:"title"`
	Body      string         `json:"body,omitempty"`
	RigID     string         `json:"rig_id,omitempty"`
	ParentID  string         `json:"parent_bead_id,omitempty"`
	Priority  Priority       `json:"priority,omitempty"`
	Labels    []string       `json:"labels,omitempty"`
	Metadata  map[string]any `json:"metadata,omitempty"`
	CreatedBy string         `json:"created_by,omitempty"`
	BlockedBy []string       `json:"blocked_by,omitempty"`
}

// RigCreatedPayload is the payload of rig_created; the event's subject id is the rig id
// (carried in the payload since rigs are not beads).
type RigCreatedPayload struct {
	RigID         string    `json:"rig_id"`
	Name          string    `json:"name"`
	GitURL        string    `json:"git_url,omitempty"`
	DefaultBranch string    `json:"default_branch,omitempty"`
	Config        RigConfig `json:"config"`
}

// AgentDispatchedPayload reports the outcome of a dispatch side effect.
type AgentDispatchedPayload struct {
	BeadID string `json:"bead_id"`
	Error  string `json:"error,omitempty"`
	// Permanent is set when retrying the start cannot help.
	Permanent bool `json:"permanent,omitempty"`
}
