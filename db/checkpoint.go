package db

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"gastown/reconciler"
)

// checkpointTables are the town's state tables, in an order in which their rows can be
// inserted (foreign keys point backwards). Deleting a town's beads and rigs removes the
// rest (ON DELETE CASCADE). bead_events (the audit feed), the inputs (events, heartbeats)
// and the monitoring tables are not state: a tick never reads them back.
var checkpointTables = []string{"rigs", "beads", "agents", "bead_dependencies", "review_metadata",
	"convoy_metadata", "escalation_metadata", "agent_nudges"}

// checkpointTownColumns are the columns of the town row that ticks read as state.
var checkpointTownColumns = []string{"config", "draining", "drain_nonce", "drain_started_at", "container_instance_id"}

// checkpointGenerated are the generated columns of the state tables (migration 00014):
// derived from other columns, so a checkpoint leaves them out and a restore lets Postgres
// compute them (TestCheckpointOmitsTheGeneratedColumns compares this with the catalog).
var checkpointGenerated = map[string][]string{"beads": {"labels_text", "metadata_text"}}

// The SQL below is built from the lists above (fixed at compile time, no input), so
// a new state table is one entry here. Every statement filters by town_id.
var (
	checkpointSelectSQL = func() string {
		var b strings.Builder
		b.WriteString("SELECT jsonb_build_object('town', (SELECT jsonb_build_object(")
		for i, c := range checkpointTownColumns {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "'%s', t.%s", c, c)
		}
		b.WriteString(") FROM towns t WHERE t.town_id = $1)")
		for _, tbl := range checkpointTables {
			row := "to_jsonb(x)"
			for _, c := range checkpointGenerated[tbl] {
				row += fmt.Sprintf(" - '%s'", c)
			}
			fmt.Fprintf(&b, ", '%s', coalesce((SELECT jsonb_agg(%s) FROM %s x WHERE x.town_id = $1), '[]'::jsonb)", tbl, row, tbl)
		}
		b.WriteString(")")
		return b.String()
	}()
	restoreTownSQL = fmt.Sprintf(`UPDATE towns t SET (%s) = (SELECT %s FROM jsonb_populate_record(NULL::towns, $2) c) WHERE t.town_id = $1`,
		strings.Join(checkpointTownColumns, ", "), "c."+strings.Join(checkpointTownColumns, ", c."))
)

// Checkpoint is one stored copy of a town's state.
type Checkpoint struct {
	TownID    string          `json:"town_id"`
	TickID    int64           `json:"tick_id"` // the state after this tick (0: before the first)
	TakenAt   time.Time       `json:"taken_at"`
	StateHash uint64          `json:"state_hash"`
	State     json.RawMessage `json:"-"`
}

// takeCheckpoint stores a copy of the town's state as it is on q now, as the state after
// tick tickID.
func takeCheckpoint(ctx context.Context, q Querier, townID string, tickID int64, at time.Time, hash uint64) error {
	_, err := q.Exec(ctx, `INSERT INTO town_checkpoints (town_id, tick_id, taken_at, state, state_hash)
VALUES ($1, $2, $3, (`+checkpointSelectSQL+`), $4)
ON CONFLICT (town_id, tick_id) DO UPDATE SET taken_at = excluded.taken_at, state = excluded.state, state_hash = excluded.state_hash`,
		townID, tickID, at, int64(hash))
	if err != nil {
		return fmt.Errorf("take checkpoint of town %s: %w", townID, err)
	}
	return nil
}

// Checkpoint takes a checkpoint inside the tick (after its actions applied): the state
// after this tick, with the hash the tick computed.
func (t *TownTx) Checkpoint(ctx context.Context, hash uint64) error {
	if err := t.Flush(ctx); err != nil {
		return err
	}
	return takeCheckpoint(ctx, t.db, t.TownID, t.TickID, t.Now, hash)
}

// CheckpointNow takes a checkpoint of a town outside a tick: it waits for the town's lock
// (bounded by the context), so the copy falls on a tick boundary, and records it as the
// state after the town's last recorded tick. It returns the checkpoint.
func (s *Store) CheckpointNow(ctx context.Context, townID string, now time.Time) (Checkpoint, error) {
	var cp Checkpoint
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		last, err := s.LockForHistory(ctx, tx, townID)
		if err != nil {
			return err
		}
		hash, err := s.checkpointOutsideTick(ctx, tx, townID, last, now)
		cp = Checkpoint{TownID: townID, TickID: last, TakenAt: now, StateHash: hash}
		return err
	})
	return cp, err
}

// checkpointOutsideTick checkpoints the town's state as it is on tx, as the state after
// tick tickID, and notes it on the town row. It returns the state's hash.
func (s *Store) checkpointOutsideTick(ctx context.Context, tx pgx.Tx, townID string, tickID int64, now time.Time) (uint64, error) {
	hash, err := s.StateHashOn(ctx, tx, townID)
	if err != nil {
		return 0, err
	}
	if err := takeCheckpoint(ctx, tx, townID, tickID, now, hash); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `UPDATE towns SET checkpoint_tick_id = $2, checkpoint_at = $3, records_since_checkpoint = 0
WHERE town_id = $1`, townID, tickID, now); err != nil {
		return 0, fmt.Errorf("note checkpoint: %w", err)
	}
	return hash, nil
}

// LockForHistory locks a town's row as a tick does, waiting for a running tick (bounded by
// the transaction's lock timeout: then ErrTownBusy), and returns the town's last recorded
// tick (0: none). A replay or a checkpoint outside a tick starts from there.
func (s *Store) LockForHistory(ctx context.Context, tx pgx.Tx, townID string) (lastRecorded int64, err error) {
	err = tx.QueryRow(ctx, `SELECT coalesce((SELECT max(tick_id) FROM tick_inputs WHERE town_id = t.town_id), 0)
FROM towns t WHERE t.town_id = $1 FOR NO KEY UPDATE`, townID).Scan(&lastRecorded)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, BusyOr(fmt.Errorf("lock town %s: %w", townID, err))
	}
	return lastRecorded, nil
}

// EarliestCheckpointTick returns the tick of the town's earliest retained checkpoint.
func (s *Store) EarliestCheckpointTick(ctx context.Context, q Querier, townID string) (int64, error) {
	var tick int64
	if err := q.QueryRow(ctx, `SELECT coalesce(min(tick_id), 0) FROM town_checkpoints WHERE town_id = $1`, townID).Scan(&tick); err != nil {
		return 0, fmt.Errorf("find the earliest checkpoint: %w", err)
	}
	return tick, nil
}

// CountRecordedTicks counts a town's recorded ticks after tick `after` up to tick `upTo`.
func (s *Store) CountRecordedTicks(ctx context.Context, q Querier, townID string, after, upTo int64) (int, error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM tick_inputs WHERE town_id = $1 AND tick_id > $2 AND tick_id <= $3`,
		townID, after, upTo).Scan(&n); err != nil {
		return 0, fmt.Errorf("count recorded ticks: %w", err)
	}
	return n, nil
}

// ReplayConfig replaces the town's config on tx, which a what-if replay rolls back.
func ReplayConfig(ctx context.Context, tx pgx.Tx, townID string, cfg reconciler.TownConfig) error {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode town config: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE towns SET config = $2 WHERE town_id = $1`, townID, raw); err != nil {
		return fmt.Errorf("replace town config: %w", err)
	}
	return nil
}

// ReplayPending makes exactly the events seqs of the town pending on tx, which a replay
// rolls back: the events of the tick it re-runs next (none: no event pending).
func ReplayPending(ctx context.Context, tx pgx.Tx, townID string, seqs []int64) error {
	if _, err := tx.Exec(ctx, `UPDATE town_events SET state = CASE WHEN seq = ANY($2) THEN 'pending' ELSE 'processed' END
WHERE town_id = $1 AND (state = 'pending' OR seq = ANY($2))`, townID, seqs); err != nil {
		return fmt.Errorf("set the replayed tick's events pending: %w", err)
	}
	return nil
}

// loadStateOn reads a town's state on tx without taking a tick (no tick id allocated).
func (s *Store) loadStateOn(ctx context.Context, tx pgx.Tx, townID string, now time.Time) (*reconciler.Snapshot, error) {
	town, err := s.q.TownGet(ctx, tx, townID)
	if err != nil {
		return nil, interpretError(err)
	}
	return s.newTownTx(tx, town, 0, now, slog.New(slog.DiscardHandler)).LoadState(ctx)
}

// LatestCheckpoint returns the town's latest checkpoint at or before tick atOrBefore
// (with its state), or ErrNotFound.
func (s *Store) LatestCheckpoint(ctx context.Context, q Querier, townID string, atOrBefore int64) (Checkpoint, error) {
	cp := Checkpoint{TownID: townID}
	var hash int64
	err := q.QueryRow(ctx, `SELECT tick_id, taken_at, state_hash, state FROM town_checkpoints
WHERE town_id = $1 AND tick_id <= $2 ORDER BY tick_id DESC LIMIT 1`, townID, atOrBefore).Scan(&cp.TickID, &cp.TakenAt, &hash, &cp.State)
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, ErrNotFound
	}
	if err != nil {
		return cp, fmt.Errorf("read checkpoint: %w", err)
	}
	cp.StateHash = uint64(hash)
	return cp, nil
}

// ListCheckpoints lists a town's checkpoints (without their state), oldest first.
func (s *Store) ListCheckpoints(ctx context.Context, townID string) ([]Checkpoint, error) {
	rows, err := s.Pool.Query(ctx, `SELECT tick_id, taken_at, state_hash FROM town_checkpoints WHERE town_id = $1 ORDER BY tick_id`, townID)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Checkpoint, error) {
		cp := Checkpoint{TownID: townID}
		var hash int64
		err := r.Scan(&cp.TickID, &cp.TakenAt, &hash)
		cp.StateHash = uint64(hash)
		return cp, err
	})
}

// RestoreCheckpoint replaces the town's state on tx with the checkpoint's. Callers run it
// in a transaction they roll back (a replay); it never leaves a town restored.
func RestoreCheckpoint(ctx context.Context, tx pgx.Tx, cp Checkpoint) error {
	var state map[string]json.RawMessage
	if err := json.Unmarshal(cp.State, &state); err != nil {
		return fmt.Errorf("checkpoint of tick %d is not a JSON object: %w", cp.TickID, err)
	}
	for _, stmt := range []string{`DELETE FROM beads WHERE town_id = $1`, `DELETE FROM rigs WHERE town_id = $1`} {
		if _, err := tx.Exec(ctx, stmt, cp.TownID); err != nil {
			return fmt.Errorf("clear town state: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, restoreTownSQL, cp.TownID, []byte(state["town"])); err != nil {
		return fmt.Errorf("restore town row: %w", err)
	}
	columns, err := restorableColumns(ctx, tx)
	if err != nil {
		return err
	}
	for _, tbl := range checkpointTables {
		rows := state[tbl]
		if len(rows) == 0 {
			continue
		}
		// A row of the checkpoint is stored under its own town id; the filter keeps a
		// doctored checkpoint from writing into another town.
		cols := columns[tbl]
		if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_recordset(NULL::%s, $2) r WHERE r.town_id = $1`, tbl, cols, cols, tbl),
			cp.TownID, []byte(rows)); err != nil {
			return fmt.Errorf("restore %s: %w", tbl, err)
		}
	}
	return nil
}

// RecordedTick is a tick as tick_inputs recorded it, with the events it applied.
type RecordedTick struct {
	TickID     int64
	ClockAt    time.Time
	Heartbeats []HeartbeatInput
	FailedSeqs []int64
	Actions    []reconciler.EncodedAction
	StateHash  uint64
	StateParts []uint64 // the hash by part (empty in records older than migration 00009)
	// AppliedSeqs are the events the tick applied (processed_tick_id), in order.
	AppliedSeqs []int64
}

// RecordedTicks lists a town's recorded ticks after tick `after` up to tick `upTo`, in
// order, at most limit of them.
func (s *Store) RecordedTicks(ctx context.Context, q Querier, townID string, after, upTo int64, limit int) ([]RecordedTick, error) {
	rows, err := q.Query(ctx, `SELECT i.tick_id, i.clock_at, i.heartbeats, i.failed_seqs, i.actions, i.state_hash, i.state_parts,
       coalesce((SELECT array_agg(e.seq ORDER BY e.seq) FROM town_events e
                 WHERE e.town_id = i.town_id AND e.processed_tick_id = i.tick_id AND e.state = 'processed'), '{}')
FROM tick_inputs i WHERE i.town_id = $1 AND i.tick_id > $2 AND i.tick_id <= $3 ORDER BY i.tick_id LIMIT $4`, townID, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("list recorded ticks: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecordedTick, error) {
		var (
			rt          RecordedTick
			hb, actions []byte
			hash        int64
			parts       []int64
		)
		if err := r.Scan(&rt.TickID, &rt.ClockAt, &hb, &rt.FailedSeqs, &actions, &hash, &parts, &rt.AppliedSeqs); err != nil {
			return rt, err
		}
		rt.StateHash = uint64(hash)
		for _, p := range parts {
			rt.StateParts = append(rt.StateParts, uint64(p))
		}
		if err := json.Unmarshal(hb, &rt.Heartbeats); err != nil {
			return rt, fmt.Errorf("tick %d heartbeats: %w", rt.TickID, err)
		}
		if err := json.Unmarshal(actions, &rt.Actions); err != nil {
			return rt, fmt.Errorf("tick %d actions: %w", rt.TickID, err)
		}
		return rt, nil
	})
}

// StateHashOn hashes a town's state as it is on tx (reconciler.StateHash).
func (s *Store) StateHashOn(ctx context.Context, tx pgx.Tx, townID string) (uint64, error) {
	snap, err := s.loadStateOn(ctx, tx, townID, time.Now())
	if err != nil {
		return 0, err
	}
	return reconciler.StateHash(snap), nil
}

// TickRange returns the first and last recorded tick of a town whose clock falls in
// [from, to] (0, 0 when none).
func (s *Store) TickRange(ctx context.Context, townID string, from, to time.Time) (first, last int64, err error) {
	err = s.Pool.QueryRow(ctx, `SELECT coalesce(min(tick_id), 0), coalesce(max(tick_id), 0) FROM tick_inputs
WHERE town_id = $1 AND clock_at >= $2 AND clock_at <= $3`, townID, from, to).Scan(&first, &last)
	if err != nil {
		return 0, 0, fmt.Errorf("find recorded ticks: %w", err)
	}
	return first, last, nil
}

// restorableColumns lists, for each state table, the columns a restore writes: all but
// the generated ones, which Postgres computes (and refuses values for), quoted and in
// the table's order.
func restorableColumns(ctx context.Context, tx pgx.Tx) (map[string]string, error) {
	rows, err := tx.Query(ctx, `
SELECT c.relname::text, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = ANY ($1::text[]::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
GROUP BY c.relname`, checkpointTables)
	if err != nil {
		return nil, fmt.Errorf("list the state tables' columns: %w", err)
	}
	out := map[string]string{}
	for rows.Next() {
		var tbl, cols string
		if err := rows.Scan(&tbl, &cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list the state tables' columns: %w", err)
		}
		out[tbl] = cols
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the state tables' columns: %w", err)
	}
	for _, tbl := range checkpointTables {
		if out[tbl] == "" {
			return nil, fmt.Errorf("state table %s has no columns in the catalog", tbl)
		}
	}
	return out, nil
}
