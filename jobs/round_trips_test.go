package jobs

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"gastown/db/dbtest"
)

func countNamed(statements []string, name string) int {
	n := 0
	for _, sql := range statements {
		if strings.HasPrefix(sql, "-- name: "+name+" ") || sql == name {
			n++
		}
	}
	return n
}

// A tick that dispatches agents sends no statement of its transaction's bookkeeping alone:
// BEGIN rides with the lock, COMMIT and the re-check after it with the last writes.
func TestTickSendsItsBookkeepingWithItsStatements(t *testing.T) {
	t.Parallel()
	tracer := &dbtest.Statements{}
	b := setup(t, testOpts{tracer: tracer})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "one"), beadCreated(rigID, "two"))
	require.NoError(t, err)

	tracer.Take()
	res, err := b.tick(ctx, townID)
	require.NoError(t, err)
	require.True(t, res.Committed)
	require.NotEmpty(t, res.SideEffects, "the tick dispatched agents")
	_, alone, batched := tracer.TakeSplit()
	for _, name := range []string{"begin", "commit", "EventHasPendingAfter", "CompleteTickJob"} {
		require.Zero(t, countNamed(alone, name), "%s sent alone", name)
	}
	for _, name := range []string{"begin", "commit", "EventHasPendingAfter"} {
		require.Equal(t, 1, countNamed(batched, name), "%s sent once in a batch", name)
	}
	// River's insert goes out once, with whatever writes the tick holds back then (often
	// none: the housekeeping check has just sent them).
	require.Equal(t, 1, countNamed(alone, "JobInsertFastMany")+countNamed(batched, "JobInsertFastMany"))
}

// A tick whose actions wrote the state reads the tables they wrote in the round trip that
// looks for housekeeping's work, not in one of their own.
func TestTickReadsItsStateAgainWithHousekeeping(t *testing.T) {
	t.Parallel()
	tracer := &dbtest.Statements{}
	b := setup(t, testOpts{tracer: tracer})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "one"))
	require.NoError(t, err)

	tracer.Take()
	res, err := b.tick(ctx, townID)
	require.NoError(t, err)
	require.Positive(t, res.Apply.Applied, "the tick's actions wrote the state")
	var with []string
	for _, batch := range tracer.TakeBatches() {
		if countNamed(batch, "HousekeepingDue") > 0 {
			require.Empty(t, with, "housekeeping looked for work twice")
			with = batch
		}
	}
	require.NotEmpty(t, with, "housekeeping's look went out in a batch")
	require.Positive(t, countNamed(with, "BeadListForSnapshot")+countNamed(with, "AgentListForSnapshot"),
		"the tables the actions wrote are read with housekeeping's look: %q", with)
}
