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
