package db_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/reconciler"
)

// rowsRead counts the rows and index entries that n and the nodes below it read from
// table (or its indexes): those they returned and those they filtered out.
func (n planNode) rowsRead(table string) float64 {
	var sum float64
	if n.Relation == table || strings.HasPrefix(n.Index, table+"_") {
		sum += n.Rows*n.Loops + n.RemovedFilter + n.RemovedRecheck
	}
	for _, c := range n.Plans {
		sum += c.rowsRead(table)
	}
	return sum
}

// Marking a drained batch processed reads the batch's rows, not the town's history, on a
// database without statistics (a fresh one, or one where autovacuum is off): on `seq =
// ANY` alone the planner took the town's every event through town_events_created (48 ms
// for 500 events of a town with 200,000 in the hot benchmark, 6 ms now). Checked on the
// statement the drain sends, with the values it is planned for and as a generic plan.
func TestMarkingADrainedBatchReadsOnlyItsEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, tracer := tracedBundle(t)
	townID, _ := b.town(t)
	const history, batch = 5000, 20
	_, err := b.store.Pool.Exec(ctx, `INSERT INTO town_events (town_id, event_id, event_type, state, attempts, processed_at)
		SELECT $1, gen_random_uuid(), 'nudge_delivered', 'processed', 1, now() FROM generate_series(1, $2::int)`, townID, history)
	require.NoError(t, err)
	nudge := func() db.NewEvent {
		return db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: reconciler.DeliveryPayload{NudgeID: db.NewID()}}
	}
	for range batch {
		b.append(t, townID, nudge())
	}
	tracer.Take()
	dr, _, _ := b.tick(t, townID, nil)
	require.Equal(t, batch, dr.Applied)
	marks := named(tracer.Take(), "EventMarkProcessedMany")
	require.Len(t, marks, 1, "the drain marks its batch in one statement")

	// A second batch, pending, to plan the statement for (in transactions rolled back).
	var seqs []int64
	for range batch {
		seqs = append(seqs, b.append(t, townID, nudge())[0].Seq)
	}
	now, tickID := time.Now(), int64(1)
	explain := func(generic bool) planNode {
		tx, err := b.store.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck
		var out []struct{ Plan planNode }
		if generic {
			_, err = tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan")
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "PREPARE mark AS "+marks[0])
			require.NoError(t, err)
			// EXECUTE takes no parameters of its own: the values go in as literals.
			list := make([]string, len(seqs))
			for i, s := range seqs {
				list[i] = strconv.FormatInt(s, 10)
			}
			err = tx.QueryRow(ctx, fmt.Sprintf("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE mark(now(), %d, '%s', '{%s}')",
				tickID, townID, strings.Join(list, ","))).Scan(&out)
		} else {
			err = tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+marks[0], now, tickID, townID, seqs).Scan(&out)
		}
		require.NoError(t, err)
		require.Len(t, out, 1)
		return out[0].Plan
	}
	for _, generic := range []bool{false, true} {
		plan := explain(generic)
		require.LessOrEqual(t, plan.rowsRead("town_events"), float64(3*batch),
			"generic plan %v: marking %d events of a town with %d reads its history:\n%s", generic, batch, history, mustJSON(t, plan))
	}
}
