// Package sqlfiles embeds the project's SQL: the migrations (the only DDL, also sqlc's
// schema input) and the dashboard queries.
package sqlfiles

import "embed"

// Migrations holds migrations/*.sql, goose-style, applied in lexical order.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Dashboards holds dashboards/*.sql, the dashboard queries over reconciler_ticks.
//
//go:embed dashboards
var Dashboards embed.FS
