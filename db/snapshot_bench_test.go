package db_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// BenchmarkLoadSnapshot loads towns of 1×, 2×, 4×, 8× a base size (250 issues, a quarter
// in progress with a polecat, an MR per ten issues) in one round trip.
func BenchmarkLoadSnapshot(b *testing.B) {
	bb := &testBundle{now: testNow()}
	bb.store = dbtest.NewStore(b)
	ctx := context.Background()
	for _, mult := range []int{1, 2, 4, 8} {
		n := 250 * mult
		townID := seedTown(b, bb, n)
		b.Run(fmt.Sprintf("beads=%d", n), func(b *testing.B) {
			tx, err := bb.store.Pool.Begin(ctx)
			require.NoError(b, err)
			defer tx.Rollback(ctx) //nolint:errcheck
			tt, err := bb.store.LockTown(ctx, tx, townID, bb.now, false, quiet)
			require.NoError(b, err)
			b.ResetTimer()
			for b.Loop() {
				tt.ForgetState() // a whole load each time, as a tick's first
				s, err := tt.LoadSnapshot(ctx)
				if err != nil || len(s.Beads) < n {
					b.Fatalf("snapshot: %v (%d beads)", err, len(s.Beads))
				}
			}
		})
	}
}

// seedTown writes a town of n issues straight into the tables (set-based SQL: fast).
func seedTown(b testing.TB, bb *testBundle, n int) string {
	ctx := context.Background()
	town, err := bb.store.CreateTown(ctx, db.NewID(), "bench", reconciler.TownConfig{}, bb.now)
	require.NoError(b, err)
	rig := db.NewID()
	_, err = bb.store.Pool.Exec(ctx, `INSERT INTO rigs (town_id, rig_id, name, created_at) VALUES ($1, $2, 'r', now())`, town.ID, rig)
	require.NoError(b, err)
	_, err = bb.store.Pool.Exec(ctx, `
INSERT INTO beads (town_id, bead_id, type, status, title, rig_id, labels, metadata, created_at, updated_at)
SELECT $1, gen_random_uuid(), 'issue', CASE WHEN i % 4 = 0 THEN 'in_progress' ELSE 'open' END, 'issue ' || i, $2,
       '["gt:held"]', '{"k": 1}', now(), now()
FROM generate_series(1, $3) i`, town.ID, rig, n)
	require.NoError(b, err)
	_, err = bb.store.Pool.Exec(ctx, `
WITH work AS (SELECT bead_id, row_number() OVER () AS k FROM beads WHERE town_id = $1 AND status = 'in_progress'),
     ab AS (INSERT INTO beads (town_id, bead_id, type, title, rig_id, created_at, updated_at)
            SELECT $1, gen_random_uuid(), 'agent', 'Polecat-' || k, $2, now(), now() FROM work RETURNING bead_id, title)
INSERT INTO agents (town_id, agent_id, role, name, rig_id, identity, status, current_hook_bead_id, last_activity_at, created_at)
SELECT $1, ab.bead_id, 'polecat', ab.title, $2, ab.title || '@' || $1, 'working', w.bead_id, now(), now()
FROM ab JOIN work w ON 'Polecat-' || w.k = ab.title`, town.ID, rig)
	require.NoError(b, err)
	_, err = bb.store.Pool.Exec(ctx, `
WITH src AS (SELECT bead_id, row_number() OVER () AS k FROM beads WHERE town_id = $1 AND type = 'issue' LIMIT $3),
     mr AS (INSERT INTO beads (town_id, bead_id, type, title, rig_id, metadata, created_at, updated_at)
            SELECT $1, gen_random_uuid(), 'merge_request', 'Review: ' || src.bead_id, $2,
                   jsonb_build_object('source_bead_id', src.bead_id), now(), now() FROM src RETURNING bead_id, metadata)
, rev AS (INSERT INTO review_metadata (town_id, bead_id, branch) SELECT $1, bead_id, 'b' FROM mr)
INSERT INTO bead_dependencies (town_id, bead_id, depends_on_bead_id, dependency_type, created_at)
SELECT $1, mr.bead_id, (mr.metadata ->> 'source_bead_id')::uuid, 'tracks', now() FROM mr`, town.ID, rig, n/10)
	require.NoError(b, err)
	return town.ID
}
