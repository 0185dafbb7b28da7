package db_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
	"gastown/db/dbtest"
)

// gastown's sessions run without JIT compilation (its compile time dwarfed the quiet
// batch's scan), unless the URL asks for it.
func TestSessionsRunWithoutJIT(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewEmptyURL(t)
	jit := func(url string) string {
		t.Helper()
		pool, err := db.Connect(ctx, url, 1)
		require.NoError(t, err)
		defer pool.Close()
		var v string
		require.NoError(t, pool.QueryRow(ctx, "SHOW jit").Scan(&v))
		return v
	}
	require.Equal(t, "off", jit(url))
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	require.Equal(t, "on", jit(url+sep+"jit=on"), "a URL's setting wins")
}

// A session that sits in a transaction without a word is ended by the server, and the
// server probes a silent peer: a frozen worker cannot keep its town locked for hours.
func TestSessionsEndAFrozenTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewEmptyURL(t)
	pool, err := db.Connect(ctx, url, 1)
	require.NoError(t, err)
	defer pool.Close()
	var idle, keepalive string
	require.NoError(t, pool.QueryRow(ctx, "SHOW idle_in_transaction_session_timeout").Scan(&idle))
	require.Equal(t, db.IdleInTransactionTimeout, idle)
	require.NoError(t, pool.QueryRow(ctx, "SHOW tcp_keepalives_idle").Scan(&keepalive))
	require.Contains(t, []string{"60", "1min", "0"}, keepalive, "set (0 on a Unix socket, where it does not apply)")

	// The server ends such a session: with the limit at 100 ms, a transaction left idle
	// for longer fails its next statement.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SET idle_in_transaction_session_timeout = '100ms'")
	require.NoError(t, err)
	time.Sleep(400 * time.Millisecond)
	_, err = tx.Exec(ctx, "SELECT 1")
	require.Error(t, err, "the server ended the idle transaction")
	_ = tx.Rollback(ctx)
}
