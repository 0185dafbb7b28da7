package db

import (
	"context"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"time"

	sqlfiles "gastown/sql"
)

// DashboardResult is the result of one dashboard query.
type DashboardResult struct {
	Columns []string
	Rows    [][]any
}

// DashboardNames lists the dashboard queries of sql/dashboards.
func DashboardNames() []string {
	entries, _ := fs.ReadDir(sqlfiles.Dashboards, "dashboards")
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".sql"); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// RunDashboard runs one dashboard query of sql/dashboards for a town ("" = the fleet) over
// [from, to) in buckets. The dashboard files are plain SQL shared with Grafana, not sqlc
// queries: they take positional parameters and are run as they are.
func (s *Store) RunDashboard(ctx context.Context, name, townID string, from, to time.Time, bucket time.Duration) (DashboardResult, error) {
	src, err := fs.ReadFile(sqlfiles.Dashboards, "dashboards/"+name+".sql")
	if err != nil {
		return DashboardResult{}, fmt.Errorf("dashboard %q: %w", name, ErrNotFound)
	}
	var town any
	if townID != "" {
		town = townID
	}
	rows, err := s.Pool.Query(ctx, string(src), town, from, to, fmt.Sprintf("%d milliseconds", bucket.Milliseconds()))
	if err != nil {
		return DashboardResult{}, fmt.Errorf("run dashboard %s: %w", name, err)
	}
	defer rows.Close()
	var res DashboardResult
	for _, f := range rows.FieldDescriptions() {
		res.Columns = append(res.Columns, f.Name)
	}
	for rows.Next() {
		v, err := rows.Values()
		if err != nil {
			return res, fmt.Errorf("read dashboard %s: %w", name, err)
		}
		res.Rows = append(res.Rows, v)
	}
	return res, rows.Err()
}
