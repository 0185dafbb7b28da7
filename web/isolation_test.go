package web

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"gastown/db"
)

// route is one documented route (openapi.json, which a test keeps equal to the router).
type route struct{ method, path string }

func documentedRoutes(t testing.TB) []route {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	var out []route
	for p, methods := range doc.Paths {
		for m := range methods {
			out = append(out, route{strings.ToUpper(m), p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// raw sends a request with an Authorization header as given (empty: none) and returns
// the status and the body.
func (b *testBundle) raw(t *testing.T, method, path, authorization string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPatch {
		body = bytes.NewReader([]byte(`{}`))
	}
	req, err := http.NewRequest(method, b.server.URL+path, body)
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close() //nolint:errcheck
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestEveryRouteRefusesStrangersAndOtherTowns tries every documented route, with two
// towns, as a stranger (no token, a wrong token, an agent's token on admin routes), as an
// agent with an expired, tampered, other agent's or other town's token, and as an admin
// naming another town's beads, rigs and agents under the first town. Everything is
// refused with a 4xx, no error body carries the other town's data, and the database is
// left exactly as it was.
func TestEveryRouteRefusesStrangersAndOtherTowns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	townA, _, agentA, _ := b.townWithAgent(t)
	townB, rigB, agentB, _ := b.townWithAgent(t)
	secret := "secret-of-town-b-" + db.NewID()
	status, created := b.do(t, http.MethodPost, "/v1/towns/"+townB+"/beads", token, map[string]any{"title": secret, "body": secret, "rig_id": rigB})
	require.Equal(t, http.StatusAccepted, status)
	beadB := created["bead_id"].(string) // named under town A below: its title must never show
	b.tick(t, townB)
	before := b.checksum(t)

	exp := time.Now().Add(time.Hour)
	agentTokenA := b.signer.Issue(townA, agentA, exp)
	tampered := []byte(agentTokenA)
	tampered[len(tampered)/2] ^= 0x01
	fill := func(p, agent string) string {
		return strings.NewReplacer("{townId}", townA, "{agentId}", agent, "{beadId}", beadB, "{convoyId}", beadB,
			"{rigId}", rigB, "{path}", "jobs").Replace(p)
	}
	leaks := func(body string) bool { return strings.Contains(body, secret) || strings.Contains(body, townB) }

	tried := 0
	for _, r := range documentedRoutes(t) {
		switch {
		case r.path == "/healthz" || r.path == "/openapi.json":
			continue // public by design
		case strings.HasPrefix(r.path, "/v1/agent/"):
			path := fill(r.path, agentA)
			for _, c := range []struct {
				auth string
				want int
			}{
				{"", http.StatusUnauthorized},
				{"Bearer " + b.signer.Issue(townA, agentA, time.Now().Add(-time.Minute)), http.StatusUnauthorized},
				{"Bearer " + string(tampered), http.StatusUnauthorized},
				{"Bearer " + token, http.StatusUnauthorized}, // an admin token is not an agent's
				{"Bearer " + b.signer.Issue(townB, agentB, exp), http.StatusForbidden},
				{"Bearer " + b.signer.Issue(townA, agentB, exp), http.StatusForbidden}, // B's agent, claimed in A
			} {
				got, body := b.raw(t, r.method, path, c.auth)
				require.Equal(t, c.want, got, "%s %s with %q: %s", r.method, path, c.auth, body)
				require.False(t, leaks(body), "%s %s leaks: %s", r.method, path, body)
				tried++
			}
			// A's valid token on B's agent in A's town, and on B's town.
			for _, p := range []string{fill(r.path, agentB), strings.Replace(fill(r.path, agentB), townA, townB, 1)} {
				got, body := b.raw(t, r.method, p, "Bearer "+agentTokenA)
				require.Equal(t, http.StatusForbidden, got, "%s %s: %s", r.method, p, body)
				require.False(t, leaks(body), "%s %s leaks: %s", r.method, p, body)
				tried++
			}
		default:
			path := fill(r.path, agentB)
			for _, auth := range []string{"", "Bearer not-the-token", "Bearer " + agentTokenA, "Basic " + "YWRtaW46d3Jvbmc="} {
				got, body := b.raw(t, r.method, path, auth)
				require.Equal(t, http.StatusUnauthorized, got, "%s %s with %q: %s", r.method, path, auth, body)
				require.False(t, leaks(body), "%s %s leaks: %s", r.method, path, body)
				tried++
			}
			// An admin naming town B's entities under town A: refused, nothing of B shown.
			if strings.Count(r.path, "{") > 1 && strings.Contains(r.path, "{townId}") {
				got, body := b.raw(t, r.method, path, "Bearer "+token)
				require.GreaterOrEqual(t, got, 400, "%s %s: %s", r.method, path, body)
				require.Less(t, got, 500, "%s %s: %s", r.method, path, body)
				require.False(t, leaks(body), "%s %s leaks: %s", r.method, path, body)
				tried++
			}
		}
	}
	require.Greater(t, tried, 100)
	require.Equal(t, before, b.checksum(t), "refused requests changed nothing")
}
