package db

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"gastown/db/internal/dbsqlc"
)

// writeBehind is the executor of a tick's statements. It holds back the statements whose
// result nobody reads — sqlc's ":exec" queries — and sends them in one batch, in order,
// before the next statement that returns something, before a savepoint begins or ends,
// and before the tick completes (Flush). A tick's writes then cost a round trip per
// batch instead of one each. An error of a held-back statement surfaces at that flush:
// within the same savepoint, so a failing event or action is still rolled back alone.
type writeBehind struct {
	inner   Querier // the transaction
	pending pgx.Batch
	// sp is the open savepoint whose SAVEPOINT statement may still be held back: a batch
	// that runs it marks it sent.
	sp *savepoint
	// wrote is the state tables the statements given to it since the town's state was
	// last read (TownTx.state) may have written — whether they ran, were held back, or
	// were rolled back since: a read by id then goes to the database.
	wrote stateTables
	// feed holds the tick's activity-feed rows (logBeadEvent) not yet queued. They go out
	// as one statement (BeadEventInsertMany) when a batch is sent, and before whatever
	// they must precede: a savepoint's boundary (a scope's rows stay in its scope) and a
	// DELETE (which would cascade to them). Nothing the tick holds back reads the feed.
	feed []dbsqlc.BeadEventInsertParams
	q    *dbsqlc.Queries
}

// logFeed holds back one activity-feed row.
func (w *writeBehind) logFeed(row dbsqlc.BeadEventInsertParams) { w.feed = append(w.feed, row) }

// queueFeed queues the feed rows held back: one row as BeadEventInsert, several as one
// BeadEventInsertMany (a tick's rows share its town and clock).
func (w *writeBehind) queueFeed(ctx context.Context) {
	rows := w.feed
	if len(rows) == 0 {
		return
	}
	w.feed = nil
	if len(rows) == 1 {
		_ = w.q.BeadEventInsert(ctx, w, rows[0]) // held back: its error surfaces at the flush
		return
	}
	p := dbsqlc.BeadEventInsertManyParams{
		TownID: rows[0].TownID, Now: rows[0].Now,
		BeadIds: make([]string, len(rows)), AgentIds: make([]string, len(rows)), EventTypes: make([]string, len(rows)),
		OldValues: make([]string, len(rows)), NewValues: make([]string, len(rows)), Metadata: make([][]byte, len(rows)),
	}
	for i, r := range rows {
		p.BeadIds[i], p.AgentIds[i], p.EventTypes[i] = r.BeadID, deref(r.AgentID), r.EventType
		p.OldValues[i], p.NewValues[i], p.Metadata[i] = deref(r.OldValue), deref(r.NewValue), r.Metadata
	}
	_ = w.q.BeadEventInsertMany(ctx, w, p)
}

// ran notes that the first n held-back statements of a batch ran.
func (w *writeBehind) ran(n int) {
	if w.sp != nil && !w.sp.sent && w.sp.mark < n {
		w.sp.sent = true
	}
}

// deferrable reports whether a statement is a sqlc ":exec" query: no rows, no count.
func deferrable(sql string) bool {
	if !strings.HasPrefix(sql, "-- name: ") {
		return false
	}
	line, _, _ := strings.Cut(sql, "\n")
	return strings.HasSuffix(strings.TrimSpace(line), " :exec")
}

func (w *writeBehind) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if !deferrable(sql) {
		return w.execNow(ctx, sql, args...)
	}
	written := writtenState(sql)
	if written == allState {
		w.queueFeed(ctx) // a DELETE (it may cascade to feed rows): the rows before it go first
	}
	w.wrote |= written
	w.pending.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

// execNow runs a statement now, in the same batch as the held-back statements (a statement
// without arguments, possibly several, after them).
func (w *writeBehind) execNow(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	w.wrote |= writtenState(sql)
	w.queueFeed(ctx)
	if len(args) == 0 {
		if err := w.flush(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return w.inner.Exec(ctx, sql)
	}
	br, err := w.sendWithPending(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if br == nil {
		return w.inner.Exec(ctx, sql, args...)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// wbTx is the tick's transaction for code outside the TownTx (River): its statements run
// at once, each in the same batch as the writes the tick holds back.
type wbTx struct {
	pgx.Tx
	wb *writeBehind
}

func (x wbTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return x.wb.execNow(ctx, sql, args...)
}

func (x wbTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return x.wb.Query(ctx, sql, args...)
}

func (x wbTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return x.wb.QueryRow(ctx, sql, args...)
}

func (x wbTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return x.wb.SendBatch(ctx, b)
}

// Query sends the held-back statements and the query in one round trip.
func (w *writeBehind) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	w.wrote |= writtenState(sql) // INSERT ... RETURNING
	br, err := w.sendWithPending(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	if br == nil {
		return w.inner.Query(ctx, sql, args...)
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return batchRows{Rows: rows, br: br}, nil
}

// QueryRow sends the held-back statements and the query in one round trip.
func (w *writeBehind) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	w.wrote |= writtenState(sql)
	br, err := w.sendWithPending(ctx, sql, args)
	if err != nil {
		return failedRow{err}
	}
	if br == nil {
		return w.inner.QueryRow(ctx, sql, args...)
	}
	return batchRow{row: br.QueryRow(), br: br}
}

// sendWithPending sends the held-back statements and one more statement in one batch and
// reads the held-back statements' results: the batch is left at the last statement's
// result, which the caller reads and then closes the batch. With nothing held back it
// returns nil: the caller runs the statement on its own.
func (w *writeBehind) sendWithPending(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	w.queueFeed(ctx)
	if len(w.pending.QueuedQueries) == 0 {
		return nil, nil
	}
	var one pgx.Batch
	one.Queue(sql, args...)
	return w.send(ctx, &one)
}

// send sends the held-back statements followed by more (nil: none) in one batch and reads
// the held-back statements' results; the batch is left at more's first result. A failed
// held-back statement fails the whole batch, which is then closed.
func (w *writeBehind) send(ctx context.Context, more *pgx.Batch) (pgx.BatchResults, error) {
	sender, ok := w.inner.(interface {
		SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	})
	if !ok {
		return nil, errors.New("the tick's executor cannot send batches")
	}
	w.queueFeed(ctx)
	n := len(w.pending.QueuedQueries)
	b := w.pending
	w.pending = pgx.Batch{}
	if more != nil {
		b.QueuedQueries = append(b.QueuedQueries, more.QueuedQueries...)
	}
	br := sender.SendBatch(ctx, &b)
	for i := range n {
		if _, err := br.Exec(); err != nil {
			w.ran(i)
			_ = br.Close()
			return nil, fmt.Errorf("held-back statement %d: %w", i, err)
		}
	}
	w.ran(n)
	return br, nil
}

// batchRows are the rows of a batch's last statement; closing them ends the batch.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r batchRows) Close() {
	r.Rows.Close()
	_ = r.br.Close()
}

// batchRow is the row of a batch's last statement; scanning it ends the batch.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// SendBatch sends the held-back statements and the batch together, in one round trip.
func (w *writeBehind) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	for _, q := range b.QueuedQueries {
		w.wrote |= writtenState(q.SQL)
	}
	br, err := w.send(ctx, b)
	if err != nil {
		return failedBatch{err}
	}
	return br
}

// flush sends the held-back statements.
func (w *writeBehind) flush(ctx context.Context) error {
	w.queueFeed(ctx)
	if len(w.pending.QueuedQueries) == 0 {
		return nil
	}
	br, err := w.send(ctx, nil)
	if err != nil {
		return err
	}
	return br.Close()
}

// discard drops the held-back statements (their savepoint is rolled back).
func (w *writeBehind) discard() { w.pending, w.feed = pgx.Batch{}, nil }

type failedRow struct{ err error }

func (r failedRow) Scan(...any) error { return r.err }

// failedBatch is the results of a batch that could not be sent.
type failedBatch struct{ err error }

func (b failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b failedBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b failedBatch) QueryRow() pgx.Row                { return failedRow(b) }
func (b failedBatch) Close() error                     { return b.err }
func (b failedBatch) Tx() pgx.Tx                       { return nil }
