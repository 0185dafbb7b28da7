package db

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PipelinedTx is a transaction on one pooled connection that spends no round trip of its
// own on BEGIN or COMMIT. BEGIN goes out at the head of the transaction's first batch (a
// statement sent alone first sends BEGIN alone); a tick commits with its last writes and
// the first statement after the commit in one batch (TickRecord.Commit). A tick then
// costs three round trips fewer than on a pgx transaction, whose Begin and Commit are a
// round trip each, followed by the re-check on a connection of its own.
//
// It implements pgx.Tx without nested transactions (a tick's savepoints are its own
// statements). Commit and Rollback release the connection; a connection left inside a
// transaction (an error) is closed by the pool rather than reused.
type PipelinedTx struct {
	conn *pgxpool.Conn
	// begun: BEGIN has been sent. done: committed or rolled back, the connection released.
	begun, done bool
}

var _ pgx.Tx = (*PipelinedTx)(nil)

// BeginPipelined acquires a connection for a pipelined transaction; nothing is sent yet.
func (s *Store) BeginPipelined(ctx context.Context) (*PipelinedTx, error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	return &PipelinedTx{conn: conn}, nil
}

// errNestedPipelined: nothing in a tick opens a pgx nested transaction.
var errNestedPipelined = errors.New("a pipelined transaction has no nested transactions")

// Begin implements pgx.Tx; nested transactions are not supported.
func (tx *PipelinedTx) Begin(context.Context) (pgx.Tx, error) { return nil, errNestedPipelined }

// begin sends BEGIN alone, for a statement that cannot carry it.
func (tx *PipelinedTx) begin(ctx context.Context) error {
	if tx.done {
		return pgx.ErrTxClosed
	}
	if tx.begun {
		return nil
	}
	if _, err := tx.conn.Exec(ctx, "begin"); err != nil {
		return err
	}
	tx.begun = true
	return nil
}

// SendBatch sends b, with BEGIN at its head when the transaction has not begun.
func (tx *PipelinedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if tx.done {
		return failedBatch{pgx.ErrTxClosed}
	}
	if tx.begun {
		return tx.conn.SendBatch(ctx, b)
	}
	var withBegin pgx.Batch
	withBegin.Queue("begin")
	withBegin.QueuedQueries = append(withBegin.QueuedQueries, b.QueuedQueries...)
	tx.begun = true
	return &afterBegin{br: tx.conn.SendBatch(ctx, &withBegin)}
}

// afterBegin are a batch's results past the BEGIN put at its head.
type afterBegin struct {
	br pgx.BatchResults
	// read: BEGIN's result has been read; err is its error.
	read bool
	err  error
}

func (a *afterBegin) skip() error {
	if !a.read {
		a.read = true
		_, a.err = a.br.Exec()
	}
	return a.err
}

func (a *afterBegin) Exec() (pgconn.CommandTag, error) {
	if err := a.skip(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return a.br.Exec()
}

func (a *afterBegin) Query() (pgx.Rows, error) {
	if err := a.skip(); err != nil {
		return nil, err
	}
	return a.br.Query()
}

func (a *afterBegin) QueryRow() pgx.Row {
	if err := a.skip(); err != nil {
		return failedRow{err}
	}
	return a.br.QueryRow()
}

func (a *afterBegin) Close() error {
	err := a.skip()
	if cerr := a.br.Close(); err == nil {
		err = cerr
	}
	return err
}

func (a *afterBegin) Tx() pgx.Tx { return nil }

// Exec implements pgx.Tx.
func (tx *PipelinedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := tx.begin(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return tx.conn.Exec(ctx, sql, args...)
}

// Query implements pgx.Tx.
func (tx *PipelinedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := tx.begin(ctx); err != nil {
		return nil, err
	}
	return tx.conn.Query(ctx, sql, args...)
}

// QueryRow implements pgx.Tx.
func (tx *PipelinedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := tx.begin(ctx); err != nil {
		return failedRow{err}
	}
	return tx.conn.QueryRow(ctx, sql, args...)
}

// Prepare implements pgx.Tx.
func (tx *PipelinedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if tx.done {
		return nil, pgx.ErrTxClosed
	}
	return tx.conn.Conn().Prepare(ctx, name, sql)
}

// CopyFrom implements pgx.Tx.
func (tx *PipelinedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := tx.begin(ctx); err != nil {
		return 0, err
	}
	return tx.conn.CopyFrom(ctx, table, columns, src)
}

// LargeObjects implements pgx.Tx; a tick has none.
func (tx *PipelinedTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

// Conn implements pgx.Tx.
func (tx *PipelinedTx) Conn() *pgx.Conn { return tx.conn.Conn() }

// Commit commits the transaction in a round trip of its own and releases the connection.
func (tx *PipelinedTx) Commit(ctx context.Context) error {
	if tx.done {
		return pgx.ErrTxClosed
	}
	if !tx.begun {
		tx.release()
		return nil
	}
	tag, err := tx.conn.Exec(ctx, "commit")
	tx.release()
	if err != nil {
		return err
	}
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// Rollback rolls the transaction back and releases the connection; after Commit (or a
// commit with the last writes) it returns pgx.ErrTxClosed, so it can be deferred.
func (tx *PipelinedTx) Rollback(ctx context.Context) error {
	if tx.done {
		return pgx.ErrTxClosed
	}
	var err error
	if tx.begun {
		_, err = tx.conn.Exec(ctx, "rollback")
	}
	tx.release()
	return err
}

// committed notes that a batch committed the transaction (TownTx.commitWithLastWrites)
// and releases the connection; the batch's results must have been closed.
func (tx *PipelinedTx) committed() { tx.release() }

// release hands the connection back to the pool, which closes it instead if it is still
// in a transaction or busy.
func (tx *PipelinedTx) release() {
	tx.done = true
	tx.conn.Release()
}
