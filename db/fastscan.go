package db

import (
	"cmp"
	"context"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// snapshotBeadsSQL is BeadListForSnapshot (sql/queries/beads.sql) without town_id, which
// the snapshot's beads do not hold, and with the labels and metadata read from their text
// twins (migration 00014: Postgres sends them as stored instead of printing the jsonb
// values for every read). sqlc's function would collect the rows in a slice of
// its own rows, grown by doubling, for the snapshot to convert; scanSnapshotBeads decodes
// each row's raw values into the snapshot's bead at once, into a slice sized by the last
// read (BENCHMARKS.md) (TestSnapshotBeadsMatchTheQuery checks that both read the same).
const snapshotBeadsSQL = `-- name: BeadListForSnapshot :many
SELECT bead_id, type, status, title, body, rig_id, parent_bead_id, assignee_agent_bead_id, priority, labels_text,
       metadata_text, dispatch_attempts, last_dispatch_attempt_at, created_by, created_at, updated_at, closed_at
FROM beads WHERE town_id = $1 AND type <> 'agent'`

// scanSnapshotBeads reads a town's beads for its snapshot, in the snapshot's order
// (sortSnapshot); capacity is how many to expect.
func scanSnapshotBeads(ctx context.Context, q Querier, townID string, capacity int) ([]reconciler.Bead, error) {
	beads, err := scanSnapshot(ctx, q, snapshotBeadsSQL, townID, capacity, decodeSnapshotBead, scanSnapshotBead)
	sortSnapshot(beads, beadOrder)
	return beads, err
}

// beadOrder is a bead's key in the snapshot's order.
func beadOrder(b *reconciler.Bead) (time.Time, string) { return b.CreatedAt, b.ID }

// decodeSnapshotBead decodes one row of snapshotBeadsSQL.
func decodeSnapshotBead(d *rowDecoder) reconciler.Bead {
	return reconciler.Bead{
		ID:                    d.uuid(0),
		Type:                  reconciler.BeadType(d.word(1)),
		Status:                reconciler.BeadStatus(d.word(2)),
		Title:                 d.text(3),
		Body:                  d.nullText(4),
		RigID:                 d.sharedUUID(5),
		ParentID:              d.sharedUUID(6),
		AssigneeID:            d.nullWord(7), // text: an agent's id, shared by its beads
		Priority:              reconciler.Priority(d.word(8)),
		Labels:                decodeStrings(d.textJSON(9), d.share),
		Metadata:              decodeMetadata(d.textJSON(10), d.share),
		DispatchAttempts:      int(d.int4(11)),
		LastDispatchAttemptAt: d.nullTime(12),
		CreatedBy:             d.nullWord(13),
		CreatedAt:             d.time(14),
		UpdatedAt:             d.time(15),
		ClosedAt:              d.nullTime(16),
	}
}

// scanSnapshotBead is decodeSnapshotBead through pgx's Scan, for a row the decoder refuses.
func scanSnapshotBead(rows pgx.Rows) (reconciler.Bead, error) {
	i := dbsqlc.Bead{}
	err := rows.Scan(&i.BeadID, &i.Type, &i.Status, &i.Title, &i.Body, &i.RigID, &i.ParentBeadID,
		&i.AssigneeAgentBeadID, &i.Priority, &i.Labels, &i.Metadata, &i.DispatchAttempts, &i.LastDispatchAttemptAt,
		&i.CreatedBy, &i.CreatedAt, &i.UpdatedAt, &i.ClosedAt)
	return beadFromInternal(&i), err
}

// snapshotAgentsSQL reads a town's agents for its snapshot: the columns the snapshot holds
// (AgentListByTown's, without the checkpoint, status message and process id), decoded into
// the snapshot's agents as scanSnapshotBeads does beads (TestSnapshotAgentsMatchTheQuery).
const snapshotAgentsSQL = `-- name: AgentListForSnapshot :many
SELECT agent_id, role, name, rig_id, identity, status, current_hook_bead_id, dispatch_attempts, last_activity_at,
       last_event_type, last_event_at, active_tools, stalled_at, created_at
FROM agents WHERE town_id = $1`

// scanSnapshotAgents reads a town's agents for its snapshot, in the snapshot's order
// (sortSnapshot); capacity is how many to expect.
func scanSnapshotAgents(ctx context.Context, q Querier, townID string, capacity int) ([]reconciler.Agent, error) {
	agents, err := scanSnapshot(ctx, q, snapshotAgentsSQL, townID, capacity, decodeSnapshotAgent, scanSnapshotAgent)
	sortSnapshot(agents, agentOrder)
	return agents, err
}

// agentOrder is an agent's key in the snapshot's order.
func agentOrder(a *reconciler.Agent) (time.Time, string) { return a.CreatedAt, a.ID }

// sortSnapshot puts a snapshot's rows in its order — by creation time, then id — as
// `ORDER BY created_at, id` would (a uuid's canonical text sorts as its bytes, the way
// Postgres orders uuids). The worker sorts rather than the server: a query without ORDER
// BY streams its rows as it reads them, where a sort holds them all back first, and the
// planner, without statistics, sorted rather than read the order off an index
// (BENCHMARKS.md, twelfth round: a 10,000-bead town's snapshot −16%). Keys are sorted
// and the rows moved once, along the permutation's cycles: sorting the rows themselves
// copied each large struct at every swap.
func sortSnapshot[T any](rows []T, key func(*T) (time.Time, string)) {
	// A key is three integers: the time's seconds and nanoseconds, and the id's first
	// eight bytes; only rows equal in all three compare their whole ids. Comparing
	// time.Time values and strings took most of a 10,000-bead snapshot's sort
	// (BENCHMARKS.md, thirteenth round).
	type rowKey struct {
		sec  int64
		id   uint64
		nsec int32
		row  int32
	}
	keyOf := func(i int) rowKey {
		at, id := key(&rows[i])
		return rowKey{sec: at.Unix(), nsec: int32(at.Nanosecond()), id: idPrefix(id), row: int32(i)}
	}
	less := func(a, b rowKey) int {
		switch {
		case a.sec != b.sec:
			return cmp.Compare(a.sec, b.sec)
		case a.nsec != b.nsec:
			return cmp.Compare(a.nsec, b.nsec)
		case a.id != b.id:
			return cmp.Compare(a.id, b.id)
		}
		_, ida := key(&rows[a.row])
		_, idb := key(&rows[b.row])
		return strings.Compare(ida, idb)
	}
	sorted := true // rows already in order cost a pass and no keys
	for i := 1; i < len(rows) && sorted; i++ {
		sorted = less(keyOf(i-1), keyOf(i)) <= 0
	}
	if sorted {
		return
	}
	keys := make([]rowKey, len(rows))
	for i := range rows {
		keys[i] = keyOf(i)
	}
	slices.SortFunc(keys, less)
	// rows[i] becomes the old rows[keys[i].row]: follow each cycle from its first place.
	for i := range keys {
		if keys[i].row < 0 {
			continue // placed with an earlier cycle
		}
		first := rows[i]
		j := i
		for {
			src := int(keys[j].row)
			keys[j].row = -1
			if src == i {
				rows[j] = first
				break
			}
			rows[j] = rows[src]
			j = src
		}
	}
}

// idPrefix is an id's first eight bytes as a big-endian number (zeros past its end), so
// that ids compare as strings.Compare compares them up to there.
func idPrefix(id string) uint64 {
	var b [8]byte
	copy(b[:], id)
	return binary.BigEndian.Uint64(b[:])
}

// decodeSnapshotAgent decodes one row of snapshotAgentsSQL.
func decodeSnapshotAgent(d *rowDecoder) reconciler.Agent {
	return reconciler.Agent{
		ID:               d.uuid(0),
		Role:             reconciler.AgentRole(d.word(1)),
		Name:             d.text(2),
		RigID:            d.sharedUUID(3),
		Identity:         d.text(4),
		Status:           reconciler.AgentStatus(d.word(5)),
		HookBeadID:       d.sharedUUID(6),
		DispatchAttempts: int(d.int4(7)),
		LastActivityAt:   d.nullTime(8),
		LastEventType:    d.nullWord(9),
		LastEventAt:      d.nullTime(10),
		ActiveTools:      decodeStrings(d.json(11), d.share),
		StalledAt:        d.nullTime(12),
		CreatedAt:        d.time(13),
	}
}

// scanSnapshotAgent is decodeSnapshotAgent through pgx's Scan.
func scanSnapshotAgent(rows pgx.Rows) (reconciler.Agent, error) {
	var a dbsqlc.Agent
	err := rows.Scan(&a.AgentID, &a.Role, &a.Name, &a.RigID, &a.Identity, &a.Status, &a.CurrentHookBeadID,
		&a.DispatchAttempts, &a.LastActivityAt, &a.LastEventType, &a.LastEventAt, &a.ActiveTools, &a.StalledAt,
		&a.CreatedAt)
	return agentFromInternal(a), err
}

// scanSnapshot runs a snapshot query of a town and decodes each row's raw values with
// decode, into a slice of capacity (it grows beyond when needed). A row with a value the
// decoder does not know (another type or format, a NULL in a column it expects none in,
// an infinite timestamp) is decoded by scan, through pgx, instead: results never differ.
func scanSnapshot[T any](ctx context.Context, q Querier, sql, townID string, capacity int,
	decode func(*rowDecoder) T, scan func(pgx.Rows) (T, error)) ([]T, error) {
	rows, err := q.Query(ctx, sql, townID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]T, 0, capacity)
	d := &rowDecoder{fields: rows.FieldDescriptions()}
	d.share = d.intern
	for rows.Next() {
		d.values, d.ok = rows.RawValues(), true
		v := decode(d)
		if !d.ok || len(d.values) != len(d.fields) {
			if v, err = scan(rows); err != nil {
				return nil, err
			}
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// rowDecoder decodes the raw values of a row, column by column, as pgx would scan them
// into the generated structs and the conversion to the snapshot's types would turn them.
// A value it does not know clears ok (the caller then scans the row through pgx). Words
// (text that repeats across rows: types, statuses, roles, assignees, authors) and the
// uuids that do (a rig, a parent, a hooked bead) are allocated once per query.
type rowDecoder struct {
	fields []pgconn.FieldDescription
	values [][]byte
	ok     bool
	words  map[string]string
	ids    map[[16]byte]string
	share  func([]byte) string // intern, made once for the JSON decoders (labels, metadata keys)
}

// value is column i's raw value when it has the type (and the binary format, when
// binary is set); ok is cleared otherwise.
func (d *rowDecoder) value(i int, oid uint32, binary bool) ([]byte, bool) {
	if i >= len(d.values) || i >= len(d.fields) {
		d.ok = false
		return nil, false
	}
	f := d.fields[i]
	if f.DataTypeOID != oid || (binary && f.Format != pgx.BinaryFormatCode) {
		d.ok = false
		return nil, false
	}
	return d.values[i], true
}

// notNull clears ok for a NULL where the column has none (pgx's Scan reports it).
func (d *rowDecoder) notNull(v []byte, ok bool) ([]byte, bool) {
	if ok && v == nil {
		d.ok = false
		return nil, false
	}
	return v, ok
}

func (d *rowDecoder) uuid(i int) string {
	v, ok := d.notNull(d.value(i, pgtype.UUIDOID, true))
	if !ok || len(v) != 16 {
		d.ok = false
		return ""
	}
	return formatUUID(v)
}

// sharedUUID is a nullable uuid ("" for NULL), allocated once per distinct value.
func (d *rowDecoder) sharedUUID(i int) string {
	v, ok := d.value(i, pgtype.UUIDOID, true)
	if !ok || v == nil {
		return ""
	}
	if len(v) != 16 {
		d.ok = false
		return ""
	}
	key := [16]byte(v)
	if s, ok := d.ids[key]; ok {
		return s
	}
	if d.ids == nil {
		d.ids = map[[16]byte]string{}
	}
	s := formatUUID(v)
	d.ids[key] = s
	return s
}

// textJSON is a text column holding a JSON document (a jsonb column's generated text
// twin): its bytes, as json's; NULL (or a value of another type, ok cleared) is nil.
func (d *rowDecoder) textJSON(i int) []byte {
	v, _ := d.textValue(i)
	return v
}

// textValue is a text column's raw value (text and varchar, in either format: their bytes).
func (d *rowDecoder) textValue(i int) ([]byte, bool) {
	if i < len(d.fields) && d.fields[i].DataTypeOID == pgtype.VarcharOID {
		return d.value(i, pgtype.VarcharOID, false)
	}
	return d.value(i, pgtype.TextOID, false)
}

func (d *rowDecoder) text(i int) string {
	v, ok := d.notNull(d.textValue(i))
	if !ok {
		return ""
	}
	return string(v)
}

// nullText is a nullable text column, "" for NULL.
func (d *rowDecoder) nullText(i int) string {
	v, ok := d.textValue(i)
	if !ok || v == nil {
		return ""
	}
	return string(v)
}

// word is a text column whose values repeat across rows, allocated once per value.
func (d *rowDecoder) word(i int) string {
	v, ok := d.notNull(d.textValue(i))
	if !ok {
		return ""
	}
	return d.intern(v)
}

// nullWord is word for a nullable column, "" for NULL.
func (d *rowDecoder) nullWord(i int) string {
	v, ok := d.textValue(i)
	if !ok || v == nil {
		return ""
	}
	return d.intern(v)
}

func (d *rowDecoder) intern(v []byte) string {
	if s, ok := d.words[string(v)]; ok {
		return s
	}
	if d.words == nil {
		d.words = map[string]string{}
	}
	s := string(v)
	d.words[s] = s
	return s
}

func (d *rowDecoder) int4(i int) int32 {
	v, ok := d.notNull(d.value(i, pgtype.Int4OID, true))
	if !ok || len(v) != 4 {
		d.ok = false
		return 0
	}
	return int32(binary.BigEndian.Uint32(v))
}

func (d *rowDecoder) time(i int) time.Time {
	v, ok := d.notNull(d.value(i, pgtype.TimestamptzOID, true))
	if !ok {
		return time.Time{}
	}
	t, ok := decodeTimestamptz(pgtype.TimestamptzOID, pgx.BinaryFormatCode, v)
	d.ok = d.ok && ok
	return t
}

// nullTime is a nullable timestamptz, the zero time for NULL.
func (d *rowDecoder) nullTime(i int) time.Time {
	v, ok := d.value(i, pgtype.TimestamptzOID, true)
	if !ok || v == nil {
		return time.Time{}
	}
	t, ok := decodeTimestamptz(pgtype.TimestamptzOID, pgx.BinaryFormatCode, v)
	d.ok = d.ok && ok
	return t
}

// json is a jsonb column's document, without binary jsonb's version byte; the bytes are
// the row's (valid until the next row): the caller decodes them at once. NULL is nil.
func (d *rowDecoder) json(i int) []byte {
	v, ok := d.value(i, pgtype.JSONBOID, false)
	if !ok || v == nil {
		return nil
	}
	if d.fields[i].Format == pgx.BinaryFormatCode {
		if len(v) == 0 || v[0] != 1 {
			d.ok = false
			return nil
		}
		v = v[1:]
	}
	return v
}
