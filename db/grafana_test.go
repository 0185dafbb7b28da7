package db_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	sqlfiles "gastown/sql"
)

var updateGrafana = flag.Bool("update-grafana", false, "rewrite deploy/grafana/dashboards/gastown.json from sql/dashboards")

const grafanaDashboard = "../deploy/grafana/dashboards/gastown.json"

// grafanaSQL turns a dashboard query's positional parameters into Grafana's: the town is a
// text variable (empty = fleet), the range and bucket are Grafana's macros.
func grafanaSQL(src string) string {
	r := strings.NewReplacer("$1", "NULLIF('${town}', '')::uuid", "$2", "$__timeFrom()", "$3", "$__timeTo()", "$4", "'$__interval'")
	return r.Replace(src)
}

// panelSpec says how each query is drawn.
var panelSpec = []struct{ file, title, kind string }{
	{"events_drained", "Events drained per tick", "timeseries"},
	{"actions_by_type", "Actions by type", "barchart"},
	{"side_effects", "Side effects attempted / succeeded / failed", "timeseries"},
	{"invariant_violations", "Invariant violations", "stat"},
	{"wall_clock", "Tick wall clock (500 ms line)", "timeseries"},
	{"pending_queue", "Pending event queue depth", "gauge"},
	{"fleet_ticks_per_second", "Fleet: ticks per second", "timeseries"},
	{"fleet_slowest_towns", "Fleet: slowest towns (p99)", "table"},
	{"fleet_growing_queues", "Fleet: towns whose queue grows", "table"},
	{"fleet_dead_events", "Fleet: dead events", "table"},
	{"fleet_dispatch_failures", "Fleet: dispatch failures", "timeseries"},
}

func buildGrafanaDashboard(t *testing.T) map[string]any {
	t.Helper()
	var panels []any
	for i, p := range panelSpec {
		src, err := fs.ReadFile(sqlfiles.Dashboards, "dashboards/"+p.file+".sql")
		require.NoError(t, err)
		format := "time_series"
		if p.kind == "table" {
			format = "table"
		}
		panel := map[string]any{
			"id": i + 1, "title": p.title, "type": p.kind, "datasource": map[string]any{"type": "grafana-postgresql-datasource", "uid": "gastown-pg"},
			"gridPos": map[string]any{"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
			"targets": []any{map[string]any{"refId": "A", "format": format, "rawQuery": true, "editorMode": "code", "rawSql": grafanaSQL(string(src))}},
		}
		switch p.file {
		case "invariant_violations":
			panel["fieldConfig"] = map[string]any{"defaults": map[string]any{"thresholds": map[string]any{"mode": "absolute",
				"steps": []any{map[string]any{"color": "green", "value": nil}, map[string]any{"color": "red", "value": 1}}}}}
		case "pending_queue":
			// Red above 50 pending events (SPEC.md §7): a step holds from its value up, and
			// depths are whole numbers.
			panel["fieldConfig"] = map[string]any{"defaults": map[string]any{"thresholds": map[string]any{"mode": "absolute",
				"steps": []any{map[string]any{"color": "green", "value": nil}, map[string]any{"color": "red", "value": 51}}}}}
		}
		panels = append(panels, panel)
	}
	return map[string]any{
		"uid": "gastown-reconciler", "title": "gastown reconciler", "schemaVersion": 39, "refresh": "10s",
		"time":       map[string]any{"from": "now-1h", "to": "now"},
		"panels":     panels,
		"templating": map[string]any{"list": []any{map[string]any{"name": "town", "label": "town id (empty: fleet)", "type": "textbox", "query": ""}}},
	}
}

// TestGrafanaDashboard keeps the provisioned dashboard built from sql/dashboards, and runs
// every panel's query, with Grafana's macros expanded as Grafana expands them, on Postgres.
func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	want := buildGrafanaDashboard(t)
	wantJSON, err := json.MarshalIndent(want, "", "  ")
	require.NoError(t, err)
	if *updateGrafana {
		require.NoError(t, os.WriteFile(grafanaDashboard, append(wantJSON, '\n'), 0o644))
	}
	raw, err := os.ReadFile(grafanaDashboard)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(raw, &got), "the dashboard is valid JSON")
	require.JSONEq(t, string(wantJSON), string(raw), "deploy/grafana/dashboards/gastown.json is stale: go test ./db -run TestGrafanaDashboard -update-grafana")

	entries, err := fs.ReadDir(sqlfiles.Dashboards, "dashboards")
	require.NoError(t, err)
	files := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			files++
		}
	}
	require.Len(t, panelSpec, files, "every dashboard query is a panel")

	b := setup(t)
	townA, _ := seedTicks(t, b, time.Now().UTC().Truncate(time.Minute).Add(-10*time.Minute))
	from, to := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339)
	for _, town := range []string{"", townA} {
		expand := strings.NewReplacer("${town}", town, "$__timeFrom()", fmt.Sprintf("'%s'::timestamptz", from),
			"$__timeTo()", fmt.Sprintf("'%s'::timestamptz", to), "$__interval", "1m")
		for _, p := range got["panels"].([]any) {
			panel := p.(map[string]any)
			sql := panel["targets"].([]any)[0].(map[string]any)["rawSql"].(string)
			rows, err := b.store.Pool.Query(context.Background(), expand.Replace(sql))
			require.NoError(t, err, panel["title"])
			n := 0
			for rows.Next() {
				n++
			}
			require.NoError(t, rows.Err(), panel["title"])
			rows.Close()
			if town == "" && panel["title"] != "Fleet: dead events" && panel["title"] != "Fleet: towns whose queue grows" {
				require.Positive(t, n, "panel %q draws the seeded ticks", panel["title"])
			}
		}
	}
}
