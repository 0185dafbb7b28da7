// Package db is gastown's Postgres adapter: the pool, migrations, the state transitions
// a tick applies (events and actions), snapshot loading, and the reads of the API.
//
// Generated sqlc types never leave this package; errors leave through one translation
// (interpretError) to the domain errors below.
package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"gastown/db/internal/dbsqlc"
)

// Domain errors.
var (
	// ErrNotFound: the row does not exist (in this town).
	ErrNotFound = errors.New("not found")
	// ErrTownBusy: another tick holds the town.
	ErrTownBusy = errors.New("town is busy")
)

// DefaultURL is the database gastown uses when DATABASE_URL is not set: the local server
// over TCP with the postgres user (trust auth on a developer machine).
const DefaultURL = "postgres://postgres@127.0.0.1:5432/gastown?sslmode=disable"

// Store is gastown's access to Postgres.
type Store struct {
	Pool *pgxpool.Pool
	q    *dbsqlc.Queries
	// sizes is how many beads and agents each town's state held when this process last
	// read it: BeginTick reads the state of a small town with the lock.
	sizes townSizes
	// checkState: see CheckStateInMemory.
	checkState bool
}

// CheckStateInMemory makes every tick of this store that made writes to its state in
// memory as well (agentInMemory) read the agents table with its next snapshot's reads and
// fail when the two differ. For tests: it costs a read of the agents per such tick.
func (s *Store) CheckStateInMemory() { s.checkState = true }

// NewStore wraps a pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{Pool: pool, q: dbsqlc.New()}
}

// Connect opens a pool and checks that the server answers, with an error that says what to
// do when it does not.
func Connect(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	return ConnectTraced(ctx, url, maxConns, nil)
}

// ConnectTraced is Connect with a tracer on every connection of the pool (nil: none).
func ConnectTraced(ctx context.Context, url string, maxConns int32, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if tracer != nil {
		cfg.ConnConfig.Tracer = tracer
	}
	SessionDefaults(cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, unreachableError(cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// SessionDefaults sets what gastown's sessions need unless the URL says otherwise
// (a URL parameter such as ?jit=on is a session setting): JIT compilation off. Every
// statement here is short or is a scan Postgres runs in milliseconds, but the planner's
// estimate for the quiet batch's look for busy towns (six EXISTS probes per due town) is
// past jit_above_cost, and compiling it took ~370 ms of a core per call at 100,000 towns,
// against ~25 ms to run it (BENCHMARKS.md, ninth round).
//
// And a session that holds a transaction open without a word for IdleInTransactionTimeout
// is ended by the server, and the server probes an idle connection's peer after a minute
// of silence (ten seconds apart, six times): a worker whose host froze or was cut off
// mid-tick would otherwise keep its town locked until the operating system gave up on the
// connection, two hours by default. Postgres then rolls the tick back and the town's next
// tick runs elsewhere (docs/reliability.md).
func SessionDefaults(cfg *pgxpool.Config) {
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	for k, v := range map[string]string{
		"jit":                                 "off",
		"idle_in_transaction_session_timeout": IdleInTransactionTimeout,
		"tcp_keepalives_idle":                 "60",
		"tcp_keepalives_interval":             "10",
		"tcp_keepalives_count":                "6",
	} {
		if _, ok := cfg.ConnConfig.RuntimeParams[k]; !ok {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
}

// IdleInTransactionTimeout is the longest a gastown session may keep a transaction open
// between statements: far beyond any tick (a tick is abandoned at --tick-timeout, 30 s by
// default, and sends its statements back to back), replay or dry-run.
const IdleInTransactionTimeout = "5min"

func unreachableError(host string, port uint16, database string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
		return fmt.Errorf("database %q does not exist on %s:%d: create it (createdb %s) or run `gastown dev`, "+
			"which creates it: %w", database, host, port, database, err)
	}
	return fmt.Errorf("cannot reach PostgreSQL at %s:%d (database %q): start it "+
		"(e.g. `pg_ctlcluster 15 main start` or `docker compose up -d postgres`) "+
		"or point DATABASE_URL at a running server: %w", host, port, database, err)
}

// interpretError turns driver errors into domain errors.
func interpretError(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// EnsureDatabase creates the database named in url if it does not exist, connecting to
// the server's "postgres" database to do so.
func EnsureDatabase(ctx context.Context, url string) (created bool, err error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return false, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	connCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(connCtx, cfg)
	if err != nil {
		return false, unreachableError(cfg.Host, cfg.Port, "postgres", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var exists bool
	// Not expressible in sqlc: it runs against the maintenance database, outside our schema.
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up database %q: %w", name, err)
	}
	if exists {
		return false, nil
	}
	// CREATE DATABASE takes no parameters; the name is quoted as an identifier.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created concurrently
			return false, nil
		}
		return false, fmt.Errorf("create database %q: %w", name, err)
	}
	return true, nil
}

// ParseURL parses a connection string.
func ParseURL(url string) (*pgx.ConnConfig, error) { return pgx.ParseConfig(url) }

// RecreateDatabase drops the database named in url (disconnecting its sessions) and
// creates it empty. The benchmark harness uses it for its own databases; never point it
// at data you keep.
func RecreateDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parse database URL: %w", err)
	}
	name := cfg.Database
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return unreachableError(cfg.Host, cfg.Port, "postgres", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// BeginWaiting begins a transaction whose lock waits are bounded by lockTimeout (SET
// LOCAL lock_timeout): a wait beyond it fails with SQLSTATE 55P03, which BusyOr maps to
// ErrTownBusy. Dry runs and replays wait for a town's lock this way.
func (s *Store) BeginWaiting(ctx context.Context, lockTimeout time.Duration) (pgx.Tx, error) {
	tx, err := s.Pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	// SET LOCAL takes no parameters; the value is formatted from a duration.
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", lockTimeout.Milliseconds())); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("set lock timeout: %w", err)
	}
	return tx, nil
}

// BusyOr maps a lock timeout (SQLSTATE 55P03: a tick held the town longer than the
// session's lock_timeout) to ErrTownBusy, and returns any other error as it is.
func BusyOr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return ErrTownBusy
	}
	return err
}
