package db

import (
	"context"

	"gastown/reconciler"
)

// Exported for the external tests of this package.
var (
	EncodeActionCounts = encodeActionCounts
	DecodeActionCounts = decodeActionCounts
	ActionCodes        = actionCodes
	// CheckpointTables and CheckpointGenerated are the state tables and their generated
	// columns as checkpoints know them.
	CheckpointTables    = checkpointTables
	CheckpointGenerated = checkpointGenerated
)

var (
	FastScan           = fastScan
	ScanSnapshotBeads  = scanSnapshotBeads
	BeadFromInternal   = beadFromInternal
	ScanSnapshotAgents = scanSnapshotAgents
	AgentFromInternal  = agentFromInternal
	ParseFlatStrings   = parseFlatStrings
	ParseFlatObject    = parseFlatObject
)

// SortSnapshotBeads is sortSnapshot as scanSnapshotBeads uses it.
func SortSnapshotBeads(beads []reconciler.Bead) { sortSnapshot(beads, beadOrder) }

// Scope runs work inside a savepoint of the tick, as an event or action runs, and reports
// the work's error (its writes undone) and whether its SAVEPOINT was sent or elided.
func (t *TownTx) Scope(ctx context.Context, work func(q Querier) error) (sent, elided bool, workErr error) {
	sp, err := t.beginSavepoint(ctx)
	if err != nil {
		return false, false, err
	}
	if workErr = t.endSavepointScope(ctx, work(t.db)); workErr == nil {
		err = sp.Commit(ctx)
	} else {
		err = sp.Rollback(ctx)
	}
	if err != nil {
		panic(err)
	}
	return sp.sent, sp.elided, workErr
}

// WrittenState names the state tables a statement may write, as the tick's write-behind
// sees them.
func WrittenState(sql string) []string {
	var out []string
	w := writtenState(sql)
	for _, t := range stateTableNames {
		if w&t.table != 0 {
			out = append(out, t.name)
		}
	}
	return out
}

// LogBeadEvent logs a row of a bead's activity feed in the tick (held back, as the
// tick's writes are).
func (t *TownTx) LogBeadEvent(ctx context.Context, beadID, typ, newValue string) error {
	return t.logBeadEvent(ctx, beadID, "", typ, "", newValue, nil)
}

// ForgetState drops the state the tick has read, so that the next LoadSnapshot reads every
// table again (a benchmark of the whole load).
func (t *TownTx) ForgetState() { t.state = nil }
