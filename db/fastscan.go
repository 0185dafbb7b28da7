package db

import (
	"context"
	"encoding/binary"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// fastScan wraps a Querier so that the rows of its queries scan the column types of a
// town's snapshot (uuid, text, int4, timestamptz, jsonb, in binary) straight from the wire
// into the generated structs' fields, without pgx's per-value scan plans. A snapshot of a
// large town scans tens of thousands of values per tick; pgx's general path costs several
// allocations and interface calls for each. Any value the fast path does not know (another
// type, text format, a NULL into a non-pointer, an infinite timestamp) sends the whole row
// through pgx's own Scan, so results never differ (TestFastScanMatchesPgx).
func fastScan(q Querier) Querier { return fastQuerier{q} }

type fastQuerier struct{ Querier }

func (f fastQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := f.Querier.Query(ctx, sql, args...)
	if err != nil {
		return rows, err
	}
	return fastRows{rows}, nil
}

type fastRows struct{ pgx.Rows }

func (r fastRows) Scan(dest ...any) error {
	fields, values := r.FieldDescriptions(), r.RawValues()
	if len(fields) != len(dest) || len(values) != len(dest) {
		return r.Rows.Scan(dest...)
	}
	for i, d := range dest {
		if !scanValue(fields[i].DataTypeOID, fields[i].Format, values[i], d) {
			return r.Rows.Scan(dest...)
		}
	}
	return nil
}

// scanValue decodes one value into d; false means "not handled here". pgx asks for
// uuid, int4 and timestamptz in binary and for text, json and jsonb as text; both forms
// of text are its bytes, binary jsonb has a version byte first.
func scanValue(oid uint32, format int16, v []byte, d any) bool {
	switch d := d.(type) {
	case *string:
		if v == nil {
			return false
		}
		s, ok := decodeString(oid, format, v)
		*d = s
		return ok
	case **string:
		if v == nil {
			*d = nil
			return true
		}
		s, ok := decodeString(oid, format, v)
		*d = &s
		return ok
	case *int32:
		if oid != pgtype.Int4OID || format != pgx.BinaryFormatCode || len(v) != 4 {
			return false
		}
		*d = int32(binary.BigEndian.Uint32(v))
		return true
	case *time.Time:
		t, ok := decodeTimestamptz(oid, format, v)
		*d = t
		return ok
	case **time.Time:
		if v == nil {
			*d = nil
			return true
		}
		t, ok := decodeTimestamptz(oid, format, v)
		*d = &t
		return ok
	case *[]byte:
		if v == nil {
			*d = nil
			return true
		}
		switch {
		case oid == pgtype.JSONBOID && format == pgx.BinaryFormatCode:
			if len(v) == 0 || v[0] != 1 {
				return false
			}
			*d = append([]byte(nil), v[1:]...)
			return true
		case oid == pgtype.JSONBOID || oid == pgtype.JSONOID || (oid == pgtype.ByteaOID && format == pgx.BinaryFormatCode):
			*d = append([]byte(nil), v...)
			return true
		}
	}
	return false
}

func decodeString(oid uint32, format int16, v []byte) (string, bool) {
	switch {
	case oid == pgtype.UUIDOID && format == pgx.BinaryFormatCode:
		if len(v) != 16 {
			return "", false
		}
		return formatUUID(v), true
	case oid == pgtype.TextOID || oid == pgtype.VarcharOID:
		return string(v), true
	}
	return "", false
}

// pgEpoch is 2000-01-01 UTC, where Postgres counts timestamps from, in Unix microseconds.
const pgEpochMicros = 946684800 * 1_000_000

// decodeTimestamptz decodes binary timestamptz as pgx does (time.Unix, local zone).
func decodeTimestamptz(oid uint32, format int16, v []byte) (time.Time, bool) {
	if oid != pgtype.TimestamptzOID || format != pgx.BinaryFormatCode || len(v) != 8 {
		return time.Time{}, false
	}
	us := int64(binary.BigEndian.Uint64(v))
	if us == math.MaxInt64 || us == math.MinInt64 { // ±infinity: pgx's business
		return time.Time{}, false
	}
	us += pgEpochMicros
	return time.Unix(us/1_000_000, (us%1_000_000)*1000), true
}

// formatUUID renders 16 bytes in the canonical 8-4-4-4-12 form with one allocation.
func formatUUID(b []byte) string {
	const hex = "0123456789abcdef"
	var buf [36]byte
	j := 0
	for i, c := range b[:16] {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			buf[j] = '-'
			j++
		}
		buf[j], buf[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return string(buf[:])
}

// snapshotBeadsSQL is BeadListForSnapshot (sql/queries/beads.sql) with its columns in the
// order sqlc scans them. sqlc's function would collect the rows in a slice of its own rows,
// grown by doubling, for the snapshot to convert; scanSnapshotBeads decodes each row into
// the snapshot's bead at once, into a slice sized by the last read — a third fewer bytes
// allocated and a fifth less time for a town of thousands of beads (BENCHMARKS.md)
// (TestSnapshotBeadsMatchTheQuery checks that both read the same).
const snapshotBeadsSQL = `-- name: BeadListForSnapshot :many
SELECT town_id, bead_id, type, status, title, body, rig_id, parent_bead_id, assignee_agent_bead_id, priority, labels,
       metadata, dispatch_attempts, last_dispatch_attempt_at, created_by, created_at, updated_at, closed_at
FROM beads WHERE town_id = $1 AND type <> 'agent' ORDER BY created_at, bead_id`

// scanSnapshotBeads reads a town's beads for its snapshot; capacity is how many to expect.
func scanSnapshotBeads(ctx context.Context, q Querier, townID string, capacity int) ([]reconciler.Bead, error) {
	return scanSnapshot(ctx, q, snapshotBeadsSQL, townID, capacity, func(rows pgx.Rows) (reconciler.Bead, error) {
		var i dbsqlc.Bead
		err := rows.Scan(&i.TownID, &i.BeadID, &i.Type, &i.Status, &i.Title, &i.Body, &i.RigID, &i.ParentBeadID,
			&i.AssigneeAgentBeadID, &i.Priority, &i.Labels, &i.Metadata, &i.DispatchAttempts, &i.LastDispatchAttemptAt,
			&i.CreatedBy, &i.CreatedAt, &i.UpdatedAt, &i.ClosedAt)
		return beadFromInternal(&i), err
	})
}

// snapshotAgentsSQL reads a town's agents for its snapshot: the columns the snapshot holds
// (AgentListByTown's, without the checkpoint, status message and process id), decoded into
// the snapshot's agents as scanSnapshotBeads does beads (TestSnapshotAgentsMatchTheQuery).
const snapshotAgentsSQL = `-- name: AgentListForSnapshot :many
SELECT agent_id, role, name, rig_id, identity, status, current_hook_bead_id, dispatch_attempts, last_activity_at,
       last_event_type, last_event_at, active_tools, stalled_at, created_at
FROM agents WHERE town_id = $1 ORDER BY created_at, agent_id`

// scanSnapshotAgents reads a town's agents for its snapshot; capacity is how many to expect.
func scanSnapshotAgents(ctx context.Context, q Querier, townID string, capacity int) ([]reconciler.Agent, error) {
	return scanSnapshot(ctx, q, snapshotAgentsSQL, townID, capacity, func(rows pgx.Rows) (reconciler.Agent, error) {
		var a dbsqlc.Agent
		err := rows.Scan(&a.AgentID, &a.Role, &a.Name, &a.RigID, &a.Identity, &a.Status, &a.CurrentHookBeadID,
			&a.DispatchAttempts, &a.LastActivityAt, &a.LastEventType, &a.LastEventAt, &a.ActiveTools, &a.StalledAt,
			&a.CreatedAt)
		return agentFromInternal(a), err
	})
}

// scanSnapshot runs a snapshot query of a town on the fast scanner and decodes each row
// with decode into a slice of capacity (it grows beyond when needed).
func scanSnapshot[T any](ctx context.Context, q Querier, sql, townID string, capacity int, decode func(pgx.Rows) (T, error)) ([]T, error) {
	rows, err := fastScan(q).Query(ctx, sql, townID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]T, 0, capacity)
	for rows.Next() {
		v, err := decode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
