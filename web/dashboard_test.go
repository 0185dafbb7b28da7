package web

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// busyTown makes a town with real tick rows: a rig, a few beads, several ticks.
func (b *testBundle) busyTown(t *testing.T) string {
	t.Helper()
	townID, rigID, _, _ := b.townWithAgent(t)
	for i := range 4 {
		b.do(t, http.MethodPost, "/v1/towns/"+townID+"/beads", token, map[string]any{"title": "more", "rig_id": rigID, "labels": []string{[]string{"gt:held", "x"}[i%2]}})
		b.tick(t, townID)
	}
	return townID
}

func getPage(t *testing.T, b *testBundle, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.server.URL+path, nil)
	require.NoError(t, err)
	req.SetBasicAuth("admin", token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestDashboardPage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townID := b.busyTown(t)
	for _, path := range []string{"/dashboard", "/dashboard?town=" + townID + "&range=30m"} {
		status, page := getPage(t, b, path)
		require.Equal(t, http.StatusOK, status)
		for _, p := range dashboardPanels {
			require.Contains(t, page, p.Title)
		}
		require.Contains(t, page, "<polyline", "charts are drawn")
		require.Contains(t, page, "dispatch_agent", "actions by type from real ticks")
		require.NotContains(t, page, "<script", "no script, no CDN")
		require.NotContains(t, page, "http://", "no external asset")
	}
	status, _ := getPage(t, b, "/dashboard?town=nope")
	require.Equal(t, http.StatusBadRequest, status)
	resp, err := http.Get(b.server.URL + "/dashboard")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

// TestDashboardInHeadlessChromium renders the page in a real browser and checks the
// screenshot shows the charts. It needs Debian's chromium; `make check/dashboard` runs it
// (GASTOWN_CHROMIUM=1 makes a missing browser an error instead of a skip).
func TestDashboardInHeadlessChromium(t *testing.T) {
	t.Parallel()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("GASTOWN_CHROMIUM") != "" {
			t.Fatal("chromium is not installed: apt-get install chromium")
		}
		t.Skip("chromium is not installed (make check/dashboard installs nothing; apt-get install chromium)")
	}
	b := setup(t)
	townID := b.busyTown(t)
	// Spread the real tick rows over the last half hour so the charts draw lines.
	_, err = b.store.Pool.Exec(context.Background(), `UPDATE reconciler_ticks t SET started_at = t.started_at - s.k * interval '4 minutes'
		FROM (SELECT tick_id, row_number() OVER (ORDER BY tick_id) AS k FROM reconciler_ticks) s WHERE s.tick_id = t.tick_id`)
	require.NoError(t, err)
	// The browser cannot be given a header; this test-only front adds the admin token.
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+token)
		proxyReq, _ := http.NewRequestWithContext(r.Context(), r.Method, b.server.URL+r.URL.RequestURI(), nil)
		proxyReq.Header = r.Header
		resp, err := http.DefaultClient.Do(proxyReq)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(front.Close)

	out := filepath.Join(os.TempDir(), "gastown-dashboard.png")
	if dir := os.Getenv("GASTOWN_SCREENSHOT_DIR"); dir != "" {
		out = filepath.Join(dir, "dashboard.png")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--window-size=1240,1400", "--screenshot="+out, front.URL+"/dashboard?range=40m&town="+townID)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, string(msg))
	raw, err := os.ReadFile(out)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	// The first series colour (#2563eb) must be on screen: lines were drawn.
	blue := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 < 0x50 && g>>8 > 0x50 && g>>8 < 0x80 && bl>>8 > 0xd0 {
				blue++
			}
		}
	}
	t.Logf("screenshot %s: %dx%d, %d chart pixels", out, bounds.Dx(), bounds.Dy(), blue)
	require.Greater(t, blue, 50, "the charts are drawn in the screenshot")
	require.True(t, strings.HasSuffix(out, ".png"))
}
