package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// injections are strings that would change something if any layer spliced them into SQL,
// a shell, a template or a path.
var injections = []string{
	`'; DROP TABLE towns; --`,
	`' OR '1'='1`,
	`"); DELETE FROM beads WHERE ('1'='1`,
	`' || pg_sleep(3) || '`,
	`\'; SELECT pg_terminate_backend(pg_backend_pid()); --`,
	`' UNION SELECT config::text FROM towns --`,
	`$1 $2 %s %d %n {{.}} ${jndi:ldap://127.0.0.1/x}`,
	`<script>alert(1)</script>`,
	`../../../etc/passwd`,
	`{"$ne": null}`,
	"\u202egnp.exe \U0001F4A5 \u202e",
}

// TestInjectionInEveryStringFieldChangesNothing takes every route with a JSON body from
// the OpenAPI document, builds a valid body from its schema, and puts each injection into
// each of its string fields in turn (free text, ids, enums, times). Every answer is a 2xx
// or a 4xx with a JSON error, in well under the 3 s a pg_sleep would take; a refused
// request leaves the database as it was; an accepted one stores the string verbatim. Ids
// in the path get the same strings. Afterwards the town ticks cleanly (the strings go
// through the apply too), no event is dead, every table still exists and the other town
// is untouched.
func TestInjectionInEveryStringFieldChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	townA, rigA, agentA, beadA := b.townWithAgent(t)
	townB, _, _, _ := b.townWithAgent(t)
	agentToken := b.signer.Issue(townA, agentA, time.Now().Add(24*time.Hour))
	tablesBefore, otherBefore := b.tableCount(t), b.townChecksum(t, townB)
	// Values a valid body needs where the schema alone does not say (ids of the town, a PR
	// URL, a bead status); lists of references stay empty.
	ids := map[string]any{"rig_id": rigA, "to_agent_id": agentA, "bead_id": beadA, "agent_id": agentA,
		"pr_url": "https://github.com/o/r/pull/1", "status": "in_progress", "blocked_by": []any{}}
	fill := routeFiller(townA, rigA, agentA, beadA)

	var doc struct {
		Paths map[string]map[string]struct {
			RequestBody *struct {
				Content map[string]struct {
					Schema schema `json:"schema"`
				} `json:"content"`
			} `json:"requestBody"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]schema `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(openAPI, &doc))
	send := func(method, path string, body []byte) (int, string, time.Duration) {
		start := time.Now()
		rec := b.serveJSON(method, path, body, agentToken)
		return rec.Code, rec.Body.String(), time.Since(start)
	}
	var paths []string
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	requests, accepted := 0, 0
	for _, p := range paths {
		for method, op := range doc.Paths[p] {
			method = strings.ToUpper(method)
			if op.RequestBody == nil || strings.HasPrefix(p, "/debug/") {
				continue
			}
			s := op.RequestBody.Content["application/json"].Schema
			valid, fields := s.example(doc.Components.Schemas, ids), s.stringFields(doc.Components.Schemas, "")
			if len(fields) == 0 {
				continue
			}
			raw, err := json.Marshal(valid)
			require.NoError(t, err)
			code, answer, _ := send(method, fill.Replace(p), raw)
			require.Less(t, code, 300, "the example body of %s %s is refused: %s", method, p, answer)
			for _, field := range fields {
				for _, inj := range injections {
					inj += fmt.Sprintf(" ·%d", requests) // each request's string is its own
					body, err := json.Marshal(setPath(valid, field, inj))
					require.NoError(t, err)
					path := fill.Replace(p)
					before := b.checksum(t)
					code, answer, took := send(method, path, body)
					requests++
					what := method + " " + path + " " + field + "=" + inj
					require.Less(t, code, 500, "%s: %d %s", what, code, answer)
					require.Less(t, took, 2*time.Second, "%s took %s", what, took)
					if code >= 400 {
						var e map[string]any
						require.NoError(t, json.Unmarshal([]byte(answer), &e), "%s: %s", what, answer)
						require.NotEmpty(t, e["error"], "%s: %s", what, answer)
						require.Equal(t, before, b.checksum(t), "%s: refused (%d) but the database changed", what, code)
						continue
					}
					accepted++
					require.True(t, b.storedVerbatim(t, inj), "%s: accepted (%d) but the string is not stored as sent", what, code)
				}
			}
		}
	}
	// Ids in the path.
	for _, inj := range injections {
		for _, p := range []string{"/v1/towns/%s", "/v1/towns/" + townA + "/beads/%s", "/v1/towns/" + townA + "/rigs/%s"} {
			path := strings.Replace(p, "%s", url.PathEscape(inj), 1)
			before := b.checksum(t)
			for _, method := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
				code, answer, _ := send(method, path, []byte(`{"status":"closed","name":"x"}`))
				requests++
				require.Less(t, code, 500, "%s %s: %s", method, path, answer)
				require.GreaterOrEqual(t, code, 400, "%s %s: %s", method, path, answer)
			}
			require.Equal(t, before, b.checksum(t), "path %s changed the database", path)
		}
	}
	// The accepted strings go through a tick.
	b.tick(t, townA)
	var dead int
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT count(*) FROM town_events WHERE state = 'dead'`).Scan(&dead))
	require.Zero(t, dead, "no event with an injected string went dead")
	require.Equal(t, tablesBefore, b.tableCount(t), "every table still there")
	require.Equal(t, otherBefore, b.townChecksum(t, townB), "the other town untouched")
	require.Positive(t, accepted)
	t.Logf("%d requests with %d injection strings, %d accepted and stored verbatim, the rest refused with a 4xx; nothing else changed", requests, len(injections), accepted)
}

// schema is the part of an OpenAPI schema the test reads.
type schema struct {
	Ref        string            `json:"$ref"`
	Type       string            `json:"type"`
	Format     string            `json:"format"`
	Enum       []any             `json:"enum"`
	Properties map[string]schema `json:"properties"`
	Items      *schema           `json:"items"`
}

func (s schema) resolve(defs map[string]schema) schema {
	if name, ok := strings.CutPrefix(s.Ref, "#/components/schemas/"); ok {
		return defs[name]
	}
	return s
}

// example is a valid value of the schema: enums take their first value, the fields named
// in ids the value given there.
func (s schema) example(defs map[string]schema, ids map[string]any) any {
	s = s.resolve(defs)
	switch {
	case len(s.Enum) > 0:
		return s.Enum[0]
	case s.Type == "object":
		out := map[string]any{}
		for name, p := range s.Properties {
			if p.Ref != "" {
				continue // a town config: its validation has its own tests (web/FuzzRequestBodies)
			}
			if v, ok := ids[name]; ok && len(p.Enum) == 0 {
				out[name] = v
				continue
			}
			out[name] = p.example(defs, ids)
		}
		return out
	case s.Type == "array":
		if s.Items == nil {
			return []any{}
		}
		return []any{s.Items.example(defs, ids)}
	case s.Type == "string" && s.Format == "date-time":
		return time.Now().UTC().Format(time.RFC3339)
	case s.Type == "string":
		return "x"
	case s.Type == "integer" || s.Type == "number":
		return 1
	case s.Type == "boolean":
		return false
	}
	return map[string]any{}
}

// stringFields lists the dotted paths of the string fields ("tasks.0.title").
func (s schema) stringFields(defs map[string]schema, prefix string) []string {
	s = s.resolve(defs)
	var out []string
	switch s.Type {
	case "string":
		out = append(out, prefix)
	case "object":
		names := make([]string, 0, len(s.Properties))
		for n, p := range s.Properties {
			if p.Ref == "" { // as in example
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, s.Properties[n].stringFields(defs, join(prefix, n))...)
		}
	case "array":
		if s.Items != nil {
			out = append(out, s.Items.stringFields(defs, join(prefix, "0"))...)
		}
	}
	return out
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// setPath returns a deep copy of v with the dotted path set to s.
func setPath(v any, path, s string) any {
	raw, _ := json.Marshal(v)
	var c any
	_ = json.Unmarshal(raw, &c)
	parts := strings.Split(path, ".")
	cur := c
	for i, p := range parts {
		last := i == len(parts)-1
		switch node := cur.(type) {
		case map[string]any:
			if list, ok := node[p].([]any); ok && len(list) == 0 {
				node[p] = []any{s} // an empty list gets the string as its element
				return c
			}
			if last {
				node[p] = s
			} else {
				cur = node[p]
			}
		case []any:
			if last {
				node[0] = s
			} else {
				cur = node[0]
			}
		}
	}
	return c
}

// storedVerbatim reports whether some row of a town table holds s as one of its string
// values, at any depth of its JSON.
func (b *testBundle) storedVerbatim(t *testing.T, s string) bool {
	t.Helper()
	for _, table := range []string{"town_events", "towns", "rigs", "beads", "agents", "agent_heartbeats", "convoy_metadata"} {
		var found bool
		require.NoError(t, b.store.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM `+table+` t
			WHERE jsonb_path_exists(to_jsonb(t), 'strict $.** ? (@ == $v)', jsonb_build_object('v', $1::text)))`, s).Scan(&found))
		if found {
			return true
		}
	}
	return false
}

func (b *testBundle) tableCount(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, b.store.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n))
	return n
}
