package reconciler

// EventType names a town event (SPEC.md §3.2, plus the user-intent and side-effect-outcome
// facts that "one writer" needs: DESIGN.md §1).
type EventType string

// Event types of the reference (SPEC.md §3.2).
const (
	EventAgentDone          EventType = "agent_done"
	EventAgentCompleted     EventType = "agent_completed"
	EventContainerStatus    EventType = "container_status"
	EventContainerEviction  EventType = "container_eviction"
	EventPRStatusChanged    EventType = "pr_status_changed"
	EventBeadCreated        EventType = "bead_created"
	EventBeadCancelled      EventType = "bead_cancelled"
	EventConvoyStarted      EventType = "convoy_started"
	EventNudgeTimeout       EventType = "nudge_timeout"
	EventPRFeedbackDetected EventType = "pr_feedback_detected"
	EventPRAutoMerge        EventType = "pr_auto_merge"
	EventPRConflictDetected EventType = "pr_conflict_detected"
)

// User intent, recorded as facts so that every write happens in a tick.
const (
	EventBeadStatusChanged      EventType = "bead_status_changed"
	EventConvoyCreated          EventType = "convoy_created"
	EventRigCreated             EventType = "rig_created"
	EventRigUpdated             EventType = "rig_updated"
	EventTownConfigUpdated      EventType = "town_config_updated"
	EventEscalationAcknowledged EventType = "escalation_acknowledged"
	EventContainerReady         EventType = "container_ready"
	EventMailSent               EventType = "mail_sent"
)

// Side-effect outcomes, reported by the jobs of the outbox.
const (
	EventAgentDispatched     EventType = "agent_dispatched"
	EventAgentDispatchFailed EventType = "agent_dispatch_failed"
	EventAgentStopped        EventType = "agent_stopped"
	EventNudgeDelivered      EventType = "nudge_delivered"
	EventNudgeDeliveryFailed EventType = "nudge_delivery_failed"
	EventMailDelivered       EventType = "mail_delivered"
	EventMailDeliveryFailed  EventType = "mail_delivery_failed"
	EventPRPolled            EventType = "pr_polled"
	EventPRPollFailed        EventType = "pr_poll_failed"
	EventPRMergeFailed       EventType = "pr_merge_failed"
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
	// BeadID, when the agent sends it, is the bead the exiting process worked on. An exit
	// that names another bead than the agent's hook is a late report of an earlier run
	// (the agent was already dispatched onto new work) and changes nothing (our addition).
	BeadID string `json:"bead_id,omitempty"`
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
	// AssigneeID addresses a message bead to its recipient.
	AssigneeID string `json:"assignee_agent_bead_id,omitempty"`
}

// RigCreatedPayload is the payload of rig_created.
type RigCreatedPayload struct {
	RigID         string    `json:"rig_id"`
	Name          string    `json:"name"`
	GitURL        string    `json:"git_url,omitempty"`
	DefaultBranch string    `json:"default_branch,omitempty"`
	Config        RigConfig `json:"config"`
}

// RigUpdatedPayload is the payload of rig_updated, a partial change: a field left out
// (an empty string, no config) keeps the rig's value; a config given replaces the rig's
// whole configuration.
type RigUpdatedPayload struct {
	RigID         string     `json:"rig_id"`
	Name          string     `json:"name,omitempty"`
	GitURL        string     `json:"git_url,omitempty"`
	DefaultBranch string     `json:"default_branch,omitempty"`
	Config        *RigConfig `json:"config,omitempty"`
}

// TownConfigPayload is the payload of town_config_updated: the whole new configuration.
type TownConfigPayload struct {
	Config TownConfig `json:"config"`
}

// AgentDispatchedPayload reports the outcome of a dispatch side effect.
type AgentDispatchedPayload struct {
	BeadID string `json:"bead_id"`
	Error  string `json:"error,omitempty"`
	// Permanent is set when retrying the start cannot help.
	Permanent bool `json:"permanent,omitempty"`
}

// ContainerStatusPayload is the payload of container_status: a non-running status the
// runtime reported for an agent.
type ContainerStatusPayload struct {
	Status     string `json:"status"`
	ExitReason string `json:"exit_reason,omitempty"`
}

// ContainerEvictionPayload is the payload of container_eviction; the nonce is generated
// by the API so it can answer at once.
type ContainerEvictionPayload struct {
	Nonce string `json:"nonce"`
}

// ContainerReadyPayload acknowledges a drain with its nonce.
type ContainerReadyPayload struct {
	Nonce string `json:"nonce"`
}

// PRStatusChangedPayload is the payload of pr_status_changed.
type PRStatusChangedPayload struct {
	PRURL   string `json:"pr_url"`
	PRState string `json:"pr_state"` // merged or closed
}

// BeadCancelledPayload is the payload of bead_cancelled.
type BeadCancelledPayload struct {
	CancelStatus BeadStatus `json:"cancel_status"`
}

// BeadStatusChangedPayload asks for a non-terminal status change of a bead.
type BeadStatusChangedPayload struct {
	Status BeadStatus `json:"status"`
	Actor  string     `json:"actor,omitempty"`
}

// ConvoyStartedPayload is the payload of convoy_started.
type ConvoyStartedPayload struct {
	ConvoyID string `json:"convoy_id"`
}

// ConvoyTask is one issue of a new convoy.
type ConvoyTask struct {
	BeadID string `json:"bead_id"`
	Title  string `json:"title"`
	Body   string `json:"body,omitempty"`
	RigID  string `json:"rig_id"`
	// BlockedBy lists bead ids of other tasks of the convoy this task waits for.
	BlockedBy []string `json:"blocked_by,omitempty"`
}

// ConvoyCreatedPayload creates a convoy with its tasks; the event's bead id is the convoy.
type ConvoyCreatedPayload struct {
	Title     string       `json:"title"`
	MergeMode string       `json:"merge_mode,omitempty"`
	Staged    bool         `json:"staged"`
	Tasks     []ConvoyTask `json:"tasks"`
}

// PRFeedbackDetectedPayload is the payload of pr_feedback_detected.
type PRFeedbackDetectedPayload struct {
	MRBeadID              string `json:"mr_bead_id"`
	PRURL                 string `json:"pr_url"`
	PRNumber              int    `json:"pr_number"`
	Repo                  string `json:"repo"`
	Branch                string `json:"branch"`
	HasUnresolvedComments bool   `json:"has_unresolved_comments"`
	HasFailingChecks      bool   `json:"has_failing_checks"`
	HasUncheckedRuns      bool   `json:"has_unchecked_runs"`
}

// PRConflictDetectedPayload is the payload of pr_conflict_detected.
type PRConflictDetectedPayload struct {
	MRBeadID     string `json:"mr_bead_id"`
	SourceBeadID string `json:"source_bead_id,omitempty"`
	PRURL        string `json:"pr_url"`
	Branch       string `json:"branch"`
}

// PRAutoMergePayload is the payload of pr_auto_merge.
type PRAutoMergePayload struct {
	MRBeadID string `json:"mr_bead_id"`
	PRURL    string `json:"pr_url"`
}

// PRFeedback is what a code host says about a PR's reviews and checks.
type PRFeedback struct {
	HasUnresolvedComments bool   `json:"has_unresolved_comments"`
	HasFailingChecks      bool   `json:"has_failing_checks"`
	AllChecksPass         bool   `json:"all_checks_pass"`
	HasUncheckedRuns      bool   `json:"has_unchecked_runs"`
	AwaitingApproval      bool   `json:"awaiting_approval"`
	ChangesRequested      bool   `json:"changes_requested"`
	ReviewDecision        string `json:"review_decision,omitempty"`
	MergeStateStatus      string `json:"merge_state_status,omitempty"`
	IsDraft               bool   `json:"is_draft"`
}

// Green reports whether the PR may be merged: no unresolved comments, no failing checks,
// every check passing, not awaiting approval, no changes requested.
func (f PRFeedback) Green() bool {
	return !f.HasUnresolvedComments && !f.HasFailingChecks && f.AllChecksPass && !f.AwaitingApproval && !f.ChangesRequested
}

// PRPolledPayload is what a poll_pr job observed of an open PR; the tick applies the
// decision tree of SPEC.md §5.3 to it.
type PRPolledPayload struct {
	MRBeadID       string      `json:"mr_bead_id"`
	PRURL          string      `json:"pr_url"`
	State          string      `json:"state"` // open (merged/closed arrive as pr_status_changed)
	MergeableState string      `json:"mergeable_state"`
	Feedback       *PRFeedback `json:"feedback,omitempty"`
	// StillOpen is the re-check of the PR's state made before feedback is acted on.
	StillOpen bool   `json:"still_open"`
	PRNumber  int    `json:"pr_number,omitempty"`
	Repo      string `json:"repo,omitempty"`
}

// PRPollFailedPayload is a failed poll (SPEC.md §5.3 error kinds).
type PRPollFailedPayload struct {
	MRBeadID   string `json:"mr_bead_id"`
	Kind       string `json:"kind"` // no_token, http_error, invalid_response, unrecognized_url, host_mismatch
	HTTPStatus int    `json:"http_status,omitempty"`
	Transient  bool   `json:"transient"`
	Message    string `json:"message"`
}

// PRMergeFailedPayload is a merge_pr job that did not merge.
type PRMergeFailedPayload struct {
	MRBeadID string `json:"mr_bead_id"`
	Reason   string `json:"reason"`
}

// DeliveryPayload reports the delivery of a nudge or a mail bead.
type DeliveryPayload struct {
	NudgeID string `json:"nudge_id,omitempty"`
	BeadID  string `json:"bead_id,omitempty"`
	Error   string `json:"error,omitempty"`
}

// EscalationAcknowledgedPayload acknowledges an escalation bead (the event's bead id).
type EscalationAcknowledgedPayload struct {
	By string `json:"by,omitempty"`
}
