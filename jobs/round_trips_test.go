package jobs

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// sentAlone records which statements a pool's connections sent alone (a round trip each)
// and which in a batch.
type sentAlone struct {
	mu           sync.Mutex
	alone, batch []string
}

func (s *sentAlone) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.alone = append(s.alone, d.SQL)
	s.mu.Unlock()
	return ctx
}
func (*sentAlone) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (*sentAlone) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (s *sentAlone) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	s.mu.Lock()
	s.batch = append(s.batch, d.SQL)
	s.mu.Unlock()
}
func (*sentAlone) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (s *sentAlone) reset() {
	s.mu.Lock()
	s.alone, s.batch = nil, nil
	s.mu.Unlock()
}

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
	tracer := &sentAlone{}
	b := setup(t, testOpts{tracer: tracer})
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "one"), beadCreated(rigID, "two"))
	require.NoError(t, err)

	tracer.reset()
	res, err := b.tick(ctx, townID)
	require.NoError(t, err)
	require.True(t, res.Committed)
	require.NotEmpty(t, res.SideEffects, "the tick dispatched agents")
	tracer.mu.Lock()
	defer tracer.mu.Unlock()
	for _, name := range []string{"begin", "commit", "EventHasPendingAfter", "CompleteTickJob"} {
		require.Zero(t, countNamed(tracer.alone, name), "%s sent alone", name)
	}
	for _, name := range []string{"begin", "commit", "EventHasPendingAfter"} {
		require.Equal(t, 1, countNamed(tracer.batch, name), "%s sent once in a batch", name)
	}
	// River's insert goes out once, with whatever writes the tick holds back then (often
	// none: the housekeeping check has just sent them).
	require.Equal(t, 1, countNamed(tracer.alone, "JobInsertFastMany")+countNamed(tracer.batch, "JobInsertFastMany"))
}
