package web

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"
)

// TestOpenAPIDocumentsEveryRoute keeps /openapi.json true: every route of the router is in
// the document with its method, and the document names no route the router lacks.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	status, doc := b.do(t, http.MethodGet, "/openapi.json", "", nil)
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "3.0.3", doc["openapi"])
	paths := doc["paths"].(map[string]any)

	documented := map[string]bool{}
	for p, ops := range paths {
		for m := range ops.(map[string]any) {
			if m != "parameters" {
				documented[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	param := regexp.MustCompile(`[:*](\w+)`)
	routed := map[string]bool{}
	api, err := New(Config{AdminTokens: []string{"x"}, AgentTokens: b.signer, Metrics: http.NotFoundHandler()}, b.store, b.svc, nil)
	require.NoError(t, err)
	for _, r := range api.Handler().(*gin.Engine).Routes() {
		p := param.ReplaceAllString(r.Path, "{$1}")
		if r.Method != http.MethodGet && strings.HasPrefix(p, RiverUIPrefix) {
			continue // the River UI is mounted for every method; its GETs are documented
		}
		routed[r.Method+" "+p] = true
	}
	var missing, extra []string
	for k := range routed {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !routed[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	require.Empty(t, missing, "routes missing from openapi.json")
	require.Empty(t, extra, "openapi.json documents routes that do not exist")
	raw, err := json.Marshal(doc)
	require.NoError(t, err)
	require.Contains(t, string(raw), "agentToken")
}
