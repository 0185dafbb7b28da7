package web

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzRequestBodies sends arbitrary bodies to every route that takes one, as an admin or
// as the agent itself: the answer is never a 5xx, an error is a JSON object naming the
// problem, and a refused request writes nothing. `go test` runs the seeds; `go test
// -fuzz FuzzRequestBodies ./web` explores.
func FuzzRequestBodies(f *testing.F) {
	b := setup(f)
	townA, rigA, agentA, beadA := b.townWithAgent(f)
	agentToken := b.signer.Issue(townA, agentA, time.Now().Add(24*time.Hour))
	var routes []route
	for _, r := range documentedRoutes(f) {
		if (r.method == http.MethodPost || r.method == http.MethodPatch) && !strings.Contains(r.path, "checkpoints") && r.path != "/v1/towns" {
			routes = append(routes, r)
		}
	}
	fill := routeFiller(townA, rigA, agentA, beadA)
	seeds := []string{``, `{}`, `[]`, `null`, `"x"`, `{"title": ""}`, `{"title": "t", "rig_id": "` + rigA + `"}`,
		`{"title": "` + strings.Repeat("x", 5000) + `"}`, `{"title": 7}`, `{"status": "closed"}`, `{"status": "nope"}`,
		`{"merge_strategy": "yolo"}`, `{"max_dispatch_attempts": -1}`, `{"unknown": true}`, `{"branch": "b"}`,
		`{"title": "t'; DROP TABLE beads; --", "rig_id": "` + rigA + `"}`, `{"rig_id": "not-a-uuid", "title": "t"}`,
		`{"from": "yesterday"}`, `{"mode": "faithful", "from_tick": -1}`, `{"nonce": "n"}`, `{"to": "` + agentA + `", "subject": "s"}`,
		`{"a":` + strings.Repeat("[", 600) + `}`, "\xff\xfe", `{"title": "\u0000"}`,
		"{\"title\": \"t\xff\", \"rig_id\": \"" + rigA + "\", \"metadata\": {\"k\": \"\xfe\"}}"}
	for i := range routes {
		for _, s := range seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		r := routes[int(which)%len(routes)]
		path := fill.Replace(r.path)
		before := b.checksum(t)
		rec := b.serveJSON(r.method, path, body, agentToken)
		if rec.Code >= 500 {
			t.Fatalf("%s %s with %q: %d %s", r.method, path, body, rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 {
			var e map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == nil || e["error"] == "" {
				t.Fatalf("%s %s with %q: %d without a JSON error: %s", r.method, path, body, rec.Code, rec.Body.String())
			}
			if after := b.checksum(t); after != before {
				t.Fatalf("%s %s with %q: refused (%d) but the database changed", r.method, path, body, rec.Code)
			}
		}
	})
}
