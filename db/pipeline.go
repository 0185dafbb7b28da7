package db

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pipeline runs several sqlc queries in one round trip. sqlc cannot express a batch of
// different statements, so each step (a closure calling one generated query) runs twice:
// first against a recorder that captures the statement and its arguments, then — once the
// whole batch went out in one round trip — against a player that hands the generated code
// the batch's results in order. The SQL stays in sql/queries; only the transport changes.
type pipeline struct {
	steps []func(q Querier) error
}

// add appends one step; it must make exactly one Query, QueryRow or Exec call on q.
func (p *pipeline) add(step func(q Querier) error) { p.steps = append(p.steps, step) }

var errRecorded = errors.New("statement recorded for a pipeline")

// run sends every step's statement in one batch on tx and lets each step read its result.
func (p *pipeline) run(ctx context.Context, tx Querier) error {
	sender, ok := tx.(interface {
		SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	})
	if !ok {
		return errors.New("pipeline needs a connection or transaction that can send batches")
	}
	rec := &recorder{}
	for i, step := range p.steps {
		before := len(rec.batch.QueuedQueries)
		if err := step(rec); err != nil && !errors.Is(err, errRecorded) {
			return fmt.Errorf("record pipeline step %d: %w", i, err)
		}
		if len(rec.batch.QueuedQueries) != before+1 {
			return fmt.Errorf("pipeline step %d made %d statements, not 1", i, len(rec.batch.QueuedQueries)-before)
		}
	}
	br := sender.SendBatch(ctx, &rec.batch)
	play := &player{br: br}
	var firstErr error
	for i, step := range p.steps {
		if err := step(play); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("pipeline step %d: %w", i, err)
		}
	}
	if err := br.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// recorder captures statements instead of running them.
type recorder struct{ batch pgx.Batch }

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.batch.Queue(sql, args...)
	return pgconn.CommandTag{}, errRecorded
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.batch.Queue(sql, args...)
	return nil, errRecorded
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.batch.Queue(sql, args...)
	return errRow{}
}

type errRow struct{}

func (errRow) Scan(...any) error { return errRecorded }

// player hands out a sent batch's results in order.
type player struct{ br pgx.BatchResults }

func (p *player) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) { return p.br.Exec() }
func (p *player) Query(context.Context, string, ...any) (pgx.Rows, error)         { return p.br.Query() }
func (p *player) QueryRow(context.Context, string, ...any) pgx.Row                { return p.br.QueryRow() }
