package db_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// TestFastScanMatchesPgx scans the same rows through the snapshot's fast path and through
// pgx's own, over values that exercise every branch: NULLs, escapes and unicode, nested
// metadata, timestamps before 1970 and before 2000 (Postgres's epoch).
func TestFastScanMatchesPgx(t *testing.T) {
	ctx := context.Background()
	store := dbtest.NewStore(t)
	town := db.NewID()
	_, err := store.Pool.Exec(ctx, `
WITH t AS (INSERT INTO towns (town_id, name, created_at, updated_at) VALUES ($1, 'fast', now(), now()) RETURNING town_id),
     r AS (INSERT INTO rigs (town_id, rig_id, name, created_at) SELECT town_id, gen_random_uuid(), 'r', now() FROM t RETURNING rig_id)
INSERT INTO beads (town_id, bead_id, type, status, title, body, rig_id, assignee_agent_bead_id, labels, metadata,
                   dispatch_attempts, last_dispatch_attempt_at, created_by, created_at, updated_at, closed_at)
SELECT $1, gen_random_uuid(), 'issue', 'open', v.title, v.body, CASE WHEN v.k % 2 = 0 THEN r.rig_id END, v.assignee,
       v.labels::jsonb, v.metadata::jsonb, v.k, v.last, v.created_by, v.created, now(), v.closed
FROM r, (VALUES
  (1, 'plain', NULL, NULL, '[]', '{}', NULL::timestamptz, NULL, '2026-01-01 00:00:00+00'::timestamptz, NULL::timestamptz),
  (2, 'quote " and \ backslash', 'body ✓ ünïcode', 'system', '["a", "b:c", "ü"]', '{"k": 1, "s": "x", "b": true, "n": null, "f": -1.5e3}',
      '1999-12-31 23:59:59.999999+00', 'me', '1970-01-01 00:00:00+00', '1969-07-20 20:17:40.5+00'),
  (3, '', '', 'agent', '["esc\"aped", "tab\t"]', '{"nested": {"a": [1, 2]}, "esc": "new\nline"}',
      '1899-12-31 23:59:59.123456+00', NULL, '2000-01-01 00:00:00.000001+00', '2100-06-30 12:00:00+00'),
  (4, 'big', NULL, NULL, '["x"]', '{"big": 12345678901234567890, "small": 1e-7, "zero": 0}',
      NULL, NULL, '0001-01-01 00:00:00+00', NULL)
) AS v(k, title, body, assignee, labels, metadata, last, created_by, created, closed)`, town)
	require.NoError(t, err)

	q := dbsqlc.New()
	slow, err := q.BeadListForSnapshot(ctx, store.Pool, town)
	require.NoError(t, err)
	fast, err := q.BeadListForSnapshot(ctx, db.FastScan(store.Pool), town)
	require.NoError(t, err)
	require.Len(t, slow, 4)
	sortByID := func(bs []dbsqlc.Bead) {
		slices.SortFunc(bs, func(a, b dbsqlc.Bead) int { return strings.Compare(a.BeadID, b.BeadID) })
	}
	sortByID(slow)
	sortByID(fast)
	require.Equal(t, len(slow), len(fast))
	for i := range slow {
		require.Equal(t, slow[i], fast[i], "row %d: every field equal, times with their zones", i)
	}
}

// The snapshot's beads, decoded straight from the rows, are what sqlc's query reads and the
// conversion of its rows makes — in the same order.
func TestSnapshotBeadsMatchTheQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, rigID := b.town(t)
	for _, title := range []string{"one", "two", "three"} {
		b.issue(t, townID, rigID, title)
	}
	b.tick(t, townID, nil) // the beads are made
	_, err := b.store.Pool.Exec(ctx, `UPDATE beads SET labels = '["x", "ü"]', metadata = '{"k": 1, "nested": {"a": [1]}}',
		body = 'body', closed_at = now(), created_by = 'me' WHERE town_id = $1 AND title = 'two'`, townID)
	require.NoError(t, err)
	// Values shared across rows (the decoder allocates them once) and every nullable column set.
	_, err = b.store.Pool.Exec(ctx, `UPDATE beads SET assignee_agent_bead_id = 'agent-1', created_by = 'me', priority = 'high'
		WHERE town_id = $1 AND title IN ('one', 'three')`, townID)
	require.NoError(t, err)
	_, err = b.store.Pool.Exec(ctx, `UPDATE beads SET rig_id = NULL, dispatch_attempts = 2, last_dispatch_attempt_at = now(),
		parent_bead_id = (SELECT bead_id FROM beads WHERE town_id = $1 AND title = 'one') WHERE town_id = $1 AND title = 'three'`, townID)
	require.NoError(t, err)

	sqlcBeads := func() ([]reconciler.Bead, error) {
		rows, err := dbsqlc.New().BeadListForSnapshot(ctx, b.store.Pool, townID)
		want := make([]reconciler.Bead, len(rows))
		for i := range rows {
			want[i] = db.BeadFromInternal(&rows[i])
		}
		return want, err
	}
	want, err := sqlcBeads()
	require.NoError(t, err)
	got, err := db.ScanSnapshotBeads(ctx, b.store.Pool, townID, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, want, got)
	three := got[slices.IndexFunc(got, func(b reconciler.Bead) bool { return b.Title == "three" })]
	require.NotEmpty(t, three.ParentID)
	require.Equal(t, "agent-1", three.AssigneeID)
	require.Equal(t, 2, three.DispatchAttempts)

	// A value the decoder leaves to pgx (an infinite timestamp) reads as pgx reads it.
	_, err = b.store.Pool.Exec(ctx, `UPDATE beads SET closed_at = 'infinity' WHERE town_id = $1 AND title = 'two'`, townID)
	require.NoError(t, err)
	want, wantErr := sqlcBeads()
	got, err = db.ScanSnapshotBeads(ctx, b.store.Pool, townID, 0)
	if wantErr != nil {
		require.Error(t, err, "pgx refuses the row: so does the snapshot")
		return
	}
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// The snapshot's agents, decoded straight from the rows, are what the conversion of
// AgentListByTown's rows makes — in the same order.
func TestSnapshotAgentsMatchTheQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townID, rigID := b.town(t)
	b.issue(t, townID, rigID, "one")
	b.issue(t, townID, rigID, "two")
	b.tick(t, townID, nil)
	_, err := b.store.Pool.Exec(ctx, `
WITH ab AS (INSERT INTO beads (town_id, bead_id, type, title, created_at, updated_at)
            SELECT $1, gen_random_uuid(), 'agent', 'polecat ' || k, now(), now() FROM generate_series(1, 3) k RETURNING bead_id, title)
INSERT INTO agents (town_id, agent_id, role, name, rig_id, identity, status, last_activity_at, last_event_type, active_tools, stalled_at, created_at)
SELECT $1, bead_id, 'polecat', title, $2, 'id-' || title, 'working', now(), CASE WHEN title = 'polecat 2' THEN 'tool_use' END,
       CASE WHEN title = 'polecat 2' THEN '["bash", "ü"]'::jsonb ELSE '[]'::jsonb END, CASE WHEN title = 'polecat 3' THEN now() END, now()
FROM ab`, townID, rigID)
	require.NoError(t, err)

	rows, err := dbsqlc.New().AgentListByTown(ctx, b.store.Pool, townID)
	require.NoError(t, err)
	want := make([]reconciler.Agent, len(rows))
	for i := range rows {
		want[i] = db.AgentFromInternal(rows[i])
	}
	got, err := db.ScanSnapshotAgents(ctx, b.store.Pool, townID, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.Equal(t, want, got)
}

// FuzzFlatJSON: whenever the fast JSON paths accept an input, they agree with
// encoding/json; inputs they refuse go to encoding/json anyway.
func FuzzFlatJSON(f *testing.F) {
	for _, s := range []string{`[]`, `["a", "b"]`, `["a","b"]`, `[ "x" ]`, `["a\"b"]`, `[1]`, `["a",]`, `["a"] x`,
		`{}`, `{"k": 1}`, `{"a": "b", "c": true, "d": false, "e": null}`, `{"n": -0.5e-3}`, `{"n": 1e400}`,
		`{"a": {"b": 1}}`, `{"a": [1]}`, `{"a" 1}`, `{"a": tru}`, `{"a": "x\ny"}`, `{"a": 1,}`, `{"a": 01}`, `{"a": 1} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// Without an interner, and with one that shares what it made (as a snapshot's
		// decoder does across rows): parsed twice, so the second parse reuses strings.
		seen := map[string]string{}
		intern := func(b []byte) string {
			if s, ok := seen[string(b)]; ok {
				return s
			}
			s := string(b)
			seen[s] = s
			return s
		}
		for _, in := range []func([]byte) string{nil, intern, intern} {
			if got, ok := db.ParseFlatStrings(raw, in); ok {
				var want []string
				require.NoError(t, json.Unmarshal(raw, &want), "fast path accepted invalid JSON %q", raw)
				if want == nil {
					want = []string{}
				}
				require.Equal(t, want, got, "%q", raw)
			}
			if got, ok := db.ParseFlatObject(raw, in); ok {
				var want map[string]any
				require.NoError(t, json.Unmarshal(raw, &want), "fast path accepted invalid JSON %q", raw)
				require.Equal(t, want, got, "%q", raw)
			}
		}
	})
}

// The snapshot's rows are sorted in the worker as `ORDER BY created_at, id` sorts them:
// any input order, ties on the time (a tick's rows share its clock), rows already in
// order, and long permutation cycles.
func TestSortSnapshotOrdersAsTheQueryWould(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 300).Draw(t, "n")
		times := rapid.IntRange(1, 5).Draw(t, "distinct times")
		// Ids may share their first 8, 13 or 23 characters (the sort's key holds the first
		// 8 bytes; the rest decides ties); times differ in seconds or in microseconds.
		common := db.NewID()
		beads := make([]reconciler.Bead, n)
		for i := range beads {
			id := db.NewID()
			if k := rapid.SampledFrom([]int{0, 8, 13, 23}).Draw(t, "common prefix"); k > 0 {
				id = common[:k] + id[k:]
			}
			at := base.Add(time.Duration(rapid.IntRange(0, times-1).Draw(t, "µs")) * time.Microsecond)
			beads[i] = reconciler.Bead{
				ID:        id,
				CreatedAt: at.Add(time.Duration(rapid.IntRange(-1, 1).Draw(t, "s")) * time.Second),
				Title:     fmt.Sprint(i), // the row moves whole
			}
		}
		if rapid.Bool().Draw(t, "already sorted") {
			db.SortSnapshotBeads(beads)
		}
		want := slices.Clone(beads)
		slices.SortFunc(want, func(a, b reconciler.Bead) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return bytes.Compare(uuidBytes(t, a.ID), uuidBytes(t, b.ID)) // as Postgres orders uuids
		})
		db.SortSnapshotBeads(beads)
		if !slices.EqualFunc(want, beads, func(a, b reconciler.Bead) bool { return a.ID == b.ID && a.Title == b.Title }) {
			t.Fatalf("sorted:\n%v\nwant:\n%v", beads, want)
		}
	})
}

// uuidBytes is a uuid's 16 bytes.
func uuidBytes(t *rapid.T, id string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("uuid %q: %v", id, err)
	}
	return b
}
