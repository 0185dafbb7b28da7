package db

import (
	"encoding/binary"
	"math"
	"slices"

	"gastown/reconciler"
)

// actionCodes numbers the action types in reconciler_ticks.actions_by_type; it matches
// the tick_action_types table (migration 00004; a test compares them). A new action type
// takes the next code here and in a migration; codes are never reused.
var actionCodes = map[reconciler.ActionType]byte{
	reconciler.ActTransitionBead: 1, reconciler.ActClearBeadAssignee: 2, reconciler.ActTransitionAgent: 3,
	reconciler.ActHookAgent: 4, reconciler.ActUnhookAgent: 5, reconciler.ActDispatchAgent: 6,
	reconciler.ActNotifyMayor: 7, reconciler.ActAssignBead: 8, reconciler.ActCreateMRBead: 9,
	reconciler.ActCreateLandingMR: 10, reconciler.ActCloseSiblingMRs: 11, reconciler.ActSetReviewPRURL: 12,
	reconciler.ActResetAgentDispatchAttempts: 13, reconciler.ActClearAgentCheckpoint: 14,
	reconciler.ActDeleteAgent: 15, reconciler.ActUpdateConvoyProgress: 16, reconciler.ActSetConvoyReadyToLand: 17,
	reconciler.ActCloseConvoy: 18, reconciler.ActFailConvoy: 19, reconciler.ActStopAgent: 20,
	reconciler.ActPollPR: 21, reconciler.ActMergePR: 22, reconciler.ActSendNudge: 23,
	reconciler.ActCreateTriageRequest: 24, reconciler.ActEmitEvent: 25,
}

// actionNames is actionCodes inverted.
var actionNames = func() map[byte]reconciler.ActionType {
	m := make(map[byte]reconciler.ActionType, len(actionCodes))
	for t, c := range actionCodes {
		m[c] = t
	}
	return m
}()

// encodeActionCounts packs action counts as reconciler_ticks stores them: per type, its
// code and its count (uint16, big-endian, saturating), in code order. Types without a
// code (none, while the code table is complete) are left out.
func encodeActionCounts(counts map[reconciler.ActionType]int) []byte {
	codes := make([]byte, 0, len(counts))
	for t, n := range counts {
		if c, ok := actionCodes[t]; ok && n > 0 {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	out := make([]byte, 0, 3*len(codes))
	for _, c := range codes {
		n := min(counts[actionNames[c]], math.MaxUint16)
		out = binary.BigEndian.AppendUint16(append(out, c), uint16(n))
	}
	return out
}

// decodeActionCounts is encodeActionCounts' inverse (unknown codes are skipped).
func decodeActionCounts(b []byte) map[string]int {
	out := make(map[string]int, len(b)/3)
	for i := 0; i+3 <= len(b); i += 3 {
		if t, ok := actionNames[b[i]]; ok {
			out[string(t)] = int(binary.BigEndian.Uint16(b[i+1 : i+3]))
		}
	}
	return out
}
