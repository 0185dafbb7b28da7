package reconciler

import (
	"encoding/json"
	"fmt"
)

// ActionType names an action (SPEC.md §5.1).
type ActionType string

// Action types.
const (
	ActTransitionBead    ActionType = "transition_bead"
	ActClearBeadAssignee ActionType = "clear_bead_assignee"
	ActTransitionAgent   ActionType = "transition_agent"
	ActHookAgent         ActionType = "hook_agent"
	ActUnhookAgent       ActionType = "unhook_agent"
	ActDispatchAgent     ActionType = "dispatch_agent"
	ActNotifyMayor       ActionType = "notify_mayor"

	ActAssignBead                 ActionType = "assign_bead"
	ActCreateMRBead               ActionType = "create_mr_bead"
	ActCreateLandingMR            ActionType = "create_landing_mr"
	ActCloseSiblingMRs            ActionType = "close_sibling_mrs"
	ActSetReviewPRURL             ActionType = "set_review_pr_url"
	ActResetAgentDispatchAttempts ActionType = "reset_agent_dispatch_attempts"
	ActClearAgentCheckpoint       ActionType = "clear_agent_checkpoint"
	ActDeleteAgent                ActionType = "delete_agent"
	ActUpdateConvoyProgress       ActionType = "update_convoy_progress"
	ActSetConvoyReadyToLand       ActionType = "set_convoy_ready_to_land"
	ActCloseConvoy                ActionType = "close_convoy"
	ActFailConvoy                 ActionType = "fail_convoy"
	ActStopAgent                  ActionType = "stop_agent"
	ActPollPR                     ActionType = "poll_pr"
	ActMergePR                    ActionType = "merge_pr"
	ActSendNudge                  ActionType = "send_nudge"
	ActCreateTriageRequest        ActionType = "create_triage_request"
	ActEmitEvent                  ActionType = "emit_event"
)

// Action is a desired mutation emitted by a rule. Every action names the state it was
// derived from (its precondition); the applier checks it and skips a stale action instead
// of applying it blind.
type Action interface {
	// Type names the action.
	Type() ActionType
}

// TransitionBead moves a bead to status To. From is the status the rule saw; when set,
// the action applies only if the bead is still in From. Terminal beads never move.
type TransitionBead struct {
	BeadID string     `json:"bead_id"`
	From   BeadStatus `json:"from,omitempty"`
	To     BeadStatus `json:"to"`
	Reason string     `json:"reason"`
	Actor  string     `json:"actor"`
}

// ClearBeadAssignee clears a bead's assignee and unhooks every agent hooked to it.
type ClearBeadAssignee struct {
	BeadID string `json:"bead_id"`
}

// TransitionAgent moves an agent to status To if it is still in From.
type TransitionAgent struct {
	AgentID string      `json:"agent_id"`
	From    AgentStatus `json:"from"`
	To      AgentStatus `json:"to"`
	Reason  string      `json:"reason"`
}

// HookAgent hooks an unhooked agent to a bead.
type HookAgent struct {
	AgentID string `json:"agent_id"`
	BeadID  string `json:"bead_id"`
}

// UnhookAgent clears an agent's hook if it is still ExpectHook (empty: any hook).
type UnhookAgent struct {
	AgentID    string `json:"agent_id"`
	ExpectHook string `json:"expect_hook,omitempty"`
	Reason     string `json:"reason"`
}

// DispatchAgent starts an agent on a bead. With AgentID empty the applier resolves the
// agent (getOrCreateAgent for the bead's role and rig) and hooks it; the bead must then
// still be open and unassigned. With AgentID set the agent must be idle and hooked to the
// bead. The start itself is a side effect that leaves through the outbox.
type DispatchAgent struct {
	AgentID string `json:"agent_id"`
	BeadID  string `json:"bead_id"`
	RigID   string `json:"rig_id"`
}

// NotifyMayor delivers a message to the town's mayor.
type NotifyMayor struct {
	Message string `json:"message"`
}

// AssignBead sets a bead's assignee.
type AssignBead struct {
	BeadID  string `json:"bead_id"`
	AgentID string `json:"agent_id"`
}

// CreateMRBead submits a source bead to the review queue.
type CreateMRBead struct {
	SourceBeadID string `json:"source_bead_id"`
	AgentID      string `json:"agent_id"`
	RigID        string `json:"rig_id"`
	Branch       string `json:"branch"`
	TargetBranch string `json:"target_branch"`
	PRURL        string `json:"pr_url,omitempty"`
	Summary      string `json:"summary,omitempty"`
}

// CreateLandingMR creates the MR that lands a convoy's feature branch, counting the attempt.
type CreateLandingMR struct {
	ConvoyID      string `json:"convoy_id"`
	RigID         string `json:"rig_id"`
	FeatureBranch string `json:"feature_branch"`
	TargetBranch  string `json:"target_branch"`
	// Attempts is the attempt count the rule saw; the action is stale if it moved.
	Attempts int `json:"attempts"`
}

// CloseSiblingMRs closes every other non-terminal MR of a source bead.
type CloseSiblingMRs struct {
	SourceBeadID string `json:"source_bead_id"`
	ExcludeMRID  string `json:"exclude_mr_id"`
}

// SetReviewPRURL records an MR's PR.
type SetReviewPRURL struct {
	BeadID string `json:"bead_id"`
	PRURL  string `json:"pr_url"`
}

// ResetAgentDispatchAttempts zeroes an agent's (and its hooked bead's) attempt counters.
type ResetAgentDispatchAttempts struct {
	AgentID string `json:"agent_id"`
}

// ClearAgentCheckpoint clears an agent's resume data.
type ClearAgentCheckpoint struct {
	AgentID string `json:"agent_id"`
}

// DeleteAgent deletes an agent; its live beads go back to open.
type DeleteAgent struct {
	AgentID string `json:"agent_id"`
	Reason  string `json:"reason"`
	// ExpectStatus is the status the rule saw; the agent is kept if it changed.
	ExpectStatus AgentStatus `json:"expect_status,omitempty"`
}

// UpdateConvoyProgress records how many of a convoy's beads are done.
type UpdateConvoyProgress struct {
	ConvoyID    string `json:"convoy_id"`
	ClosedBeads int    `json:"closed_beads"`
}

// SetConvoyReadyToLand marks a convoy's feature branch ready for its landing MR.
type SetConvoyReadyToLand struct {
	ConvoyID string `json:"convoy_id"`
}

// CloseConvoy closes a convoy as landed.
type CloseConvoy struct {
	ConvoyID string `json:"convoy_id"`
}

// FailConvoy fails a convoy.
type FailConvoy struct {
	ConvoyID string `json:"convoy_id"`
	Reason   string `json:"reason"`
}

// StopAgent stops an agent's process (a side effect).
type StopAgent struct {
	AgentID string `json:"agent_id"`
	Reason  string `json:"reason"`
}

// PollPR polls an MR's PR (a side effect whose observation comes back as an event).
type PollPR struct {
	BeadID string `json:"bead_id"`
	PRURL  string `json:"pr_url"`
}

// MergePR merges an MR's PR (a side effect).
type MergePR struct {
	BeadID string `json:"bead_id"`
	PRURL  string `json:"pr_url"`
}

// NudgeTier is the GUPP tier of a reconciler nudge.
type NudgeTier string

// Nudge tiers.
const (
	TierWarn      NudgeTier = "warn"
	TierEscalate  NudgeTier = "escalate"
	TierForceStop NudgeTier = "force_stop"
)

// SendNudge sends an agent a message now.
type SendNudge struct {
	AgentID string    `json:"agent_id"`
	Message string    `json:"message"`
	Tier    NudgeTier `json:"tier"`
}

// CreateTriageRequest asks the triage agent to look at an agent.
type CreateTriageRequest struct {
	AgentID    string `json:"agent_id"`
	TriageType string `json:"triage_type"`
	Reason     string `json:"reason"`
	// HookedBeadID is the bead the agent was hooked to, for the triage agent's context.
	HookedBeadID string `json:"hooked_bead_id,omitempty"`
}

// EmitEvent records an analytics event.
type EmitEvent struct {
	Name string         `json:"event_name"`
	Data map[string]any `json:"data"`
}

// Type implements Action.
func (AssignBead) Type() ActionType { return ActAssignBead }

// Type implements Action.
func (CreateMRBead) Type() ActionType { return ActCreateMRBead }

// Type implements Action.
func (CreateLandingMR) Type() ActionType { return ActCreateLandingMR }

// Type implements Action.
func (CloseSiblingMRs) Type() ActionType { return ActCloseSiblingMRs }

// Type implements Action.
func (SetReviewPRURL) Type() ActionType { return ActSetReviewPRURL }

// Type implements Action.
func (ResetAgentDispatchAttempts) Type() ActionType { return ActResetAgentDispatchAttempts }

// Type implements Action.
func (ClearAgentCheckpoint) Type() ActionType { return ActClearAgentCheckpoint }

// Type implements Action.
func (DeleteAgent) Type() ActionType { return ActDeleteAgent }

// Type implements Action.
func (UpdateConvoyProgress) Type() ActionType { return ActUpdateConvoyProgress }

// Type implements Action.
func (SetConvoyReadyToLand) Type() ActionType { return ActSetConvoyReadyToLand }

// Type implements Action.
func (CloseConvoy) Type() ActionType { return ActCloseConvoy }

// Type implements Action.
func (FailConvoy) Type() ActionType { return ActFailConvoy }

// Type implements Action.
func (StopAgent) Type() ActionType { return ActStopAgent }

// Type implements Action.
func (PollPR) Type() ActionType { return ActPollPR }

// Type implements Action.
func (MergePR) Type() ActionType { return ActMergePR }

// Type implements Action.
func (SendNudge) Type() ActionType { return ActSendNudge }

// Type implements Action.
func (CreateTriageRequest) Type() ActionType { return ActCreateTriageRequest }

// Type implements Action.
func (EmitEvent) Type() ActionType { return ActEmitEvent }

// Type implements Action.
func (TransitionBead) Type() ActionType { return ActTransitionBead }

// Type implements Action.
func (ClearBeadAssignee) Type() ActionType { return ActClearBeadAssignee }

// Type implements Action.
func (TransitionAgent) Type() ActionType { return ActTransitionAgent }

// Type implements Action.
func (HookAgent) Type() ActionType { return ActHookAgent }

// Type implements Action.
func (UnhookAgent) Type() ActionType { return ActUnhookAgent }

// Type implements Action.
func (DispatchAgent) Type() ActionType { return ActDispatchAgent }

// Type implements Action.
func (NotifyMayor) Type() ActionType { return ActNotifyMayor }

// ActionTypes lists every action type, in declaration order (a test keeps it complete).
var ActionTypes = []ActionType{
	ActTransitionBead, ActClearBeadAssignee, ActTransitionAgent, ActHookAgent, ActUnhookAgent,
	ActDispatchAgent, ActNotifyMayor, ActAssignBead, ActCreateMRBead, ActCreateLandingMR,
	ActCloseSiblingMRs, ActSetReviewPRURL, ActResetAgentDispatchAttempts, ActClearAgentCheckpoint,
	ActDeleteAgent, ActUpdateConvoyProgress, ActSetConvoyReadyToLand, ActCloseConvoy, ActFailConvoy,
	ActStopAgent, ActPollPR, ActMergePR, ActSendNudge, ActCreateTriageRequest, ActEmitEvent,
}

// CountByType returns how many actions of each type the list holds.
func CountByType(actions []Action) map[ActionType]int {
	m := make(map[ActionType]int)
	for _, a := range actions {
		m[a.Type()]++
	}
	return m
}

// EncodedAction is the JSON form of an action: its type next to its fields.
type EncodedAction struct {
	Type   ActionType      `json:"type"`
	Fields json.RawMessage `json:"fields"`
}

// EncodeActions turns actions into their JSON form, for dry-run responses and records.
func EncodeActions(actions []Action) ([]EncodedAction, error) {
	out := make([]EncodedAction, 0, len(actions))
	for _, a := range actions {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("encode %s action: %w", a.Type(), err)
		}
		out = append(out, EncodedAction{Type: a.Type(), Fields: b})
	}
	return out, nil
}
