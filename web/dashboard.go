package web

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"gastown/db"
)

// dashboardPanel says how a dashboard query is drawn on the built-in page.
type dashboardPanel struct {
	Query, Title, Kind string // Kind: series, pivot (series by the second column), table
}

// dashboardPanels are the panels of the built-in dashboard: the same queries as Grafana's.
var dashboardPanels = []dashboardPanel{
	{"events_drained", "Events drained per tick", "series"},
	{"actions_by_type", "Actions by type", "pivot"},
	{"side_effects", "Side effects attempted / succeeded / failed", "series"},
	{"invariant_violations", "Invariant violations", "series"},
	{"wall_clock", "Tick wall clock, ms (dashed: 500 ms)", "series"},
	{"pending_queue", "Pending event queue depth", "series"},
	{"fleet_ticks_per_second", "Ticks per second", "series"},
	{"fleet_dispatch_failures", "Dispatch failures", "series"},
	{"fleet_slowest_towns", "Slowest towns (p99)", "table"},
	{"fleet_growing_queues", "Towns whose queue grows", "table"},
	{"fleet_dead_events", "Dead events", "table"},
}

var palette = []string{"#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563"}

type renderedPanel struct {
	Title string
	SVG   template.HTML
	Table *db.DashboardResult
	Empty bool
}

// dashboardPage draws the dashboard panels for a town (?town=) or the fleet over ?range=
// (default 1h) as server-side SVG: no script, no external asset, works offline.
func (s *Server) dashboardPage(c *gin.Context) {
	town := c.Query("town")
	if town != "" && !db.IsID(town) {
		writeError(c, http.StatusBadRequest, "town must be a UUID (or empty for the fleet)")
		return
	}
	rng := time.Hour
	if r := c.Query("range"); r != "" {
		d, err := time.ParseDuration(r)
		if err != nil || d < time.Minute || d > 90*24*time.Hour {
			writeError(c, http.StatusBadRequest, "range must be a duration from 1m to 2160h")
			return
		}
		rng = d
	}
	to := s.clock().UTC()
	from := to.Add(-rng)
	bucket := max(rng/60, time.Second).Truncate(time.Second)
	var panels []renderedPanel
	for _, p := range dashboardPanels {
		res, err := s.store.RunDashboard(c, p.Query, town, from, to, bucket)
		if err != nil {
			s.fail(c, err)
			return
		}
		rp := renderedPanel{Title: p.Title, Empty: len(res.Rows) == 0}
		switch p.Kind {
		case "table":
			rp.Table = &res
		case "pivot":
			rp.SVG = chart(pivot(res), from, to)
		default:
			rp.SVG = chart(seriesOf(res), from, to)
		}
		panels = append(panels, rp)
	}
	scope := "the fleet"
	if town != "" {
		scope = "town " + town
	}
	c.Header("Content-Type", "text/html; charset=utf-8")
	if err := dashboardTmpl.Execute(c.Writer, map[string]any{
		"Scope": scope, "From": from.Format(time.RFC3339), "To": to.Format(time.RFC3339), "Bucket": bucket, "Panels": panels,
		"Town": town, "Range": rng,
	}); err != nil {
		s.logger.Error("render dashboard", "error", err)
	}
}

type point struct {
	t time.Time
	v float64
}

type series struct {
	name   string
	points []point
	dashed bool
}

// seriesOf takes the first column as time and every numeric column as a series.
func seriesOf(res db.DashboardResult) []series {
	var out []series
	for ci := 1; ci < len(res.Columns); ci++ {
		s := series{name: res.Columns[ci], dashed: strings.HasPrefix(res.Columns[ci], "threshold")}
		for _, row := range res.Rows {
			t, ok := row[0].(time.Time)
			v, isNum := number(row[ci])
			if ok && isNum {
				s.points = append(s.points, point{t, v})
			}
		}
		if len(s.points) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// pivot makes one series per value of the second column (e.g. action type).
func pivot(res db.DashboardResult) []series {
	by := map[string]*series{}
	var names []string
	for _, row := range res.Rows {
		t, ok := row[0].(time.Time)
		name := fmt.Sprint(row[1])
		v, isNum := number(row[2])
		if !ok || !isNum {
			continue
		}
		if by[name] == nil {
			by[name] = &series{name: name}
			names = append(names, name)
		}
		by[name].points = append(by[name].points, point{t, v})
	}
	sort.Strings(names)
	out := make([]series, 0, len(names))
	for _, n := range names {
		out = append(out, *by[n])
	}
	return out
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case float32:
		return float64(x), true
	}
	return 0, false
}

// chart draws series as an SVG line chart over [from, to].
func chart(ss []series, from, to time.Time) template.HTML {
	const w, h, left, right, top, bottom = 560.0, 200.0, 44.0, 10.0, 10.0, 40.0
	maxV := 0.0
	for _, s := range ss {
		for _, p := range s.points {
			maxV = math.Max(maxV, p.v)
		}
	}
	if maxV == 0 {
		maxV = 1
	}
	maxV *= 1.1
	span := to.Sub(from).Seconds()
	x := func(t time.Time) float64 { return left + (w-left-right)*t.Sub(from).Seconds()/span }
	y := func(v float64) float64 { return top + (h-top-bottom)*(1-v/maxV) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img">`, w, h, w, h)
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#f8fafc" stroke="#cbd5e1"/>`, left, top, w-left-right, h-top-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" text-anchor="end">%s</text>`, left-4, top+8, trimNum(maxV))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" text-anchor="end">0</text>`, left-4, h-bottom)
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10">%s</text>`, left, h-bottom+12, from.Format("15:04"))
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" font-size="10" text-anchor="end">%s</text>`, w-right, h-bottom+12, to.Format("15:04"))
	for i, s := range ss {
		color := palette[i%len(palette)]
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		pts := make([]string, 0, len(s.points))
		for _, p := range s.points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.t), y(p.v)))
		}
		if len(pts) == 1 { // a lone bucket: draw it as a dot
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(s.points[0].t), y(s.points[0].v), color)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`, color, dash, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f" font-size="11">%s</text>`,
			left+float64(i%4)*130, h-18+float64(i/4)*12, color, left+14+float64(i%4)*130, h-9+float64(i/4)*12, template.HTMLEscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built from numbers and escaped names
}

func trimNum(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

var dashboardTmpl = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"cell": func(v any) string {
		if t, ok := v.(time.Time); ok {
			return t.Format(time.RFC3339)
		}
		if f, ok := v.(float64); ok {
			return trimNum(f)
		}
		if b, ok := v.([16]byte); ok {
			return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
		}
		return fmt.Sprint(v)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gastown — {{.Scope}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:16px;color:#0f172a;background:#fff}
h1{font-size:18px;margin:0 0 4px} .sub{color:#475569;font-size:12px;margin-bottom:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(580px,1fr));gap:12px}
.panel{border:1px solid #e2e8f0;border-radius:6px;padding:8px} .panel h2{font-size:13px;margin:0 0 6px}
table{border-collapse:collapse;font-size:11px;width:100%} td,th{border-bottom:1px solid #e2e8f0;padding:2px 4px;text-align:left}
.empty{color:#94a3b8;font-size:12px}
</style></head><body>
<h1>gastown reconciler — {{.Scope}}</h1>
<div class="sub">{{.From}} → {{.To}}, buckets of {{.Bucket}} ·
<form method="get" style="display:inline">town <input name="town" value="{{.Town}}" size="38" placeholder="empty: fleet"> range <input name="range" value="{{.Range}}" size="6"> <button>show</button></form></div>
<div class="grid">
{{range .Panels}}<div class="panel"><h2>{{.Title}}</h2>
{{if .Empty}}<div class="empty">nothing in this range</div>{{else if .Table}}<table><tr>{{range .Table.Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Table.Rows}}<tr>{{range .}}<td>{{cell .}}</td>{{end}}</tr>{{end}}</table>{{else}}{{.SVG}}{{end}}
</div>
{{end}}</div></body></html>`))
