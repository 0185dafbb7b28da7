package db_test

import (
	"context"
	"strings"
	"testing"

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
