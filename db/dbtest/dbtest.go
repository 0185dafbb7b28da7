// Package dbtest gives tests a real, isolated Postgres database: a fresh copy of a
// migrated template per test, dropped when the test ends. Tests that commit or run a River
// client use it; nothing is mocked.
package dbtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"gastown/db"
	sqlfiles "gastown/sql"
)

// ServerURL is the maintenance database tests connect to: GASTOWN_TEST_DATABASE_URL or
// the local server.
func ServerURL() string {
	if u := os.Getenv("GASTOWN_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// templateLock serialises template creation and copies across test processes.
const templateLock = 0x67617374657374

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// NewPool returns a pool on a fresh migrated database of its own, dropped at cleanup.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return NewTracedPool(t, nil)
}

// NewTracedPool is NewPool with a tracer on its connections (nil: none).
func NewTracedPool(t testing.TB, tracer pgx.QueryTracer) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 20
	if tracer != nil {
		cfg.ConnConfig.Tracer = tracer
	}
	db.SessionDefaults(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewURL creates a fresh migrated database and returns its connection string; the
// database is dropped (with any connections left) at cleanup.
func NewURL(t testing.TB) string {
	t.Helper()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(context.Background()) })
	if templateErr != nil {
		t.Fatalf("test template database: %v", templateErr)
	}
	return newDatabase(t, templateName)
}

// NewEmptyURL creates an empty database (no migrations) and returns its connection
// string; it is dropped at cleanup.
func NewEmptyURL(t testing.TB) string {
	t.Helper()
	return newDatabase(t, "template0")
}

func newDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	name := "gastown_test_" + randomSuffix()
	if err := withServer(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(templateLock)); err != nil {
			return err
		}
		defer conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(templateLock)) //nolint:errcheck
		_, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s",
			pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize()))
		return err
	}); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		_ = withServer(ctx, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize()))
			return err
		})
	})
	cfg, err := pgx.ParseConfig(ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
}

// NewStore returns a Store on a fresh database that checks the writes its ticks make to
// their state in memory against the tables (db.Store.CheckStateInMemory).
func NewStore(t testing.TB) *db.Store {
	s := db.NewStore(NewPool(t))
	s.CheckStateInMemory()
	return s
}

// ensureTemplate creates, once per set of migrations, a migrated template database.
func ensureTemplate(ctx context.Context) (string, error) {
	name := "gastown_test_tpl_" + migrationsHash()
	err := withServer(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(templateLock)); err != nil {
			return err
		}
		defer conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(templateLock)) //nolint:errcheck
		var exists bool
		if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		// Templates of earlier migrations are not needed any more.
		rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'gastown_test_tpl_%' AND datname <> $1", name)
		if err != nil {
			return err
		}
		olds, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, old := range olds {
			_, _ = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{old}.Sanitize()))
		}
		building := name + "_building"
		if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{building}.Sanitize())); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
			return err
		}
		cfg, err := pgxpool.ParseConfig(ServerURL())
		if err != nil {
			return err
		}
		cfg.ConnConfig.Database = building
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return err
		}
		err = db.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
		pool.Close()
		if err != nil {
			return fmt.Errorf("migrate template: %w", err)
		}
		_, err = conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s",
			pgx.Identifier{building}.Sanitize(), pgx.Identifier{name}.Sanitize()))
		return err
	})
	return name, err
}

func withServer(ctx context.Context, f func(*pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		return fmt.Errorf("connect to %s (is PostgreSQL running? set GASTOWN_TEST_DATABASE_URL): %w", ServerURL(), err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	return f(conn)
}

// migrationsHash names the template after the migrations, so a changed migration gets a
// new template.
func migrationsHash() string {
	h := sha256.New()
	_ = fs.WalkDir(sqlfiles.Migrations, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := sqlfiles.Migrations.ReadFile(path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Statements is a pgx tracer that records the statements a pool's connections send: all of
// them in order, and apart those sent alone (a round trip each) and those sent in a batch,
// and each batch's statements together.
type Statements struct {
	mu                  sync.Mutex
	all, alone, batched []string
	batches             [][]string
	open                map[*pgx.Conn]int // the batch each connection is sending (batches index)
}

// TraceQueryStart implements pgx.QueryTracer.
func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.mu.Lock()
	s.all, s.alone = append(s.all, d.SQL), append(s.alone, d.SQL)
	s.mu.Unlock()
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (*Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer.
func (s *Statements) TraceBatchStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	s.mu.Lock()
	if s.open == nil {
		s.open = map[*pgx.Conn]int{}
	}
	s.open[conn] = len(s.batches)
	s.batches = append(s.batches, nil)
	s.mu.Unlock()
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (s *Statements) TraceBatchQuery(_ context.Context, conn *pgx.Conn, d pgx.TraceBatchQueryData) {
	s.mu.Lock()
	s.all, s.batched = append(s.all, d.SQL), append(s.batched, d.SQL)
	if i, ok := s.open[conn]; ok {
		s.batches[i] = append(s.batches[i], d.SQL)
	}
	s.mu.Unlock()
}

// TraceBatchEnd implements pgx.BatchTracer.
func (s *Statements) TraceBatchEnd(_ context.Context, conn *pgx.Conn, _ pgx.TraceBatchEndData) {
	s.mu.Lock()
	delete(s.open, conn)
	s.mu.Unlock()
}

// TakeBatches returns the statements of each batch sent so far, and forgets every
// statement recorded (as Take does).
func (s *Statements) TakeBatches() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.batches
	s.all, s.alone, s.batched, s.batches, s.open = nil, nil, nil, nil, nil
	return out
}

// Take returns every statement recorded so far and forgets them all.
func (s *Statements) Take() []string {
	all, _, _ := s.TakeSplit()
	return all
}

// TakeAlone returns the statements sent alone so far and forgets them all.
func (s *Statements) TakeAlone() []string {
	_, alone, _ := s.TakeSplit()
	return alone
}

// TakeSplit returns the statements recorded so far — all, those sent alone and those
// sent in a batch — and forgets them.
func (s *Statements) TakeSplit() (all, alone, batched []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, alone, batched = s.all, s.alone, s.batched
	s.all, s.alone, s.batched, s.batches, s.open = nil, nil, nil, nil, nil
	return all, alone, batched
}
