package db_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fleetQueries are the queries that are about the fleet or a tenant as a whole, not about
// one town's state.
var fleetQueries = map[string]string{
	"TownInsert":               "creates a tenant",
	"TownList":                 "lists tenants",
	"TownListDue":              "the sweep: towns due for a tick",
	"TickEnsurePartitions":     "partition maintenance",
	"TickDropPartitionsBefore": "partition retention",
	"RollupWatermark":          "fleet-wide rollup",
	"RollupTicksMinutely":      "fleet-wide rollup",
	"RollupSetWatermark":       "fleet-wide rollup",
	"RollupPrune":              "rollup retention",
	"AgentListObservable":      "fleet-wide container observation",
	"QuietTownsLock":           "quiet ticks: due towns on the idle cadence",
	"QuietTownsBusy":           "quiet ticks: due towns left to full ticks",
	"QuietTickIDs":             "a sequence",
}

// TestEveryQueryFiltersByTown checks the rule "every query on town state filters by
// town_id" on the query sources themselves, so a new query cannot forget it.
func TestEveryQueryFiltersByTown(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../sql/queries/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	nameRE := regexp.MustCompile(`(?m)^-- name: (\w+)`)
	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		src := string(raw)
		idx := nameRE.FindAllStringSubmatchIndex(src, -1)
		for i, m := range idx {
			name := src[m[2]:m[3]]
			end := len(src)
			if i+1 < len(idx) {
				end = idx[i+1][0]
			}
			body := src[m[1]:end]
			body = body[strings.Index(body, "\n")+1:] // past ":one", ":exec"...
			if _, ok := fleetQueries[name]; ok {
				continue
			}
			checked++
			if strings.HasPrefix(strings.TrimSpace(stripComments(body)), "INSERT") {
				require.Contains(t, body, "@town_id", "%s in %s must write the town_id", name, filepath.Base(f))
			} else {
				// One town, or a named set of towns (the quiet ticks' batch).
				require.Regexp(t, `town_id\s*=\s*(@town_id\b|ANY \(@town_ids::uuid\[\]\))`, body, "%s in %s must filter by town_id", name, filepath.Base(f))
			}
			// Every FROM/JOIN/UPDATE/INTO of a town table inside the query is scoped: a
			// second table must be joined on town_id too.
			if strings.Count(strings.ToUpper(body), " JOIN ") > 0 {
				require.Regexp(t, `\.town_id\s*=\s*\w+\.town_id`, body, "%s joins without town_id", name)
			}
		}
	}
	require.Greater(t, checked, 50)
}

func stripComments(sql string) string {
	var out []string
	for _, line := range strings.Split(sql, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "--") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
