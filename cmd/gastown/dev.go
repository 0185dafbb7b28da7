package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gastown/agentrt"
	"gastown/db"
	"gastown/reconciler"
)

// demoBeads are the issues of the demo town.
var demoBeads = []string{
	"Add a health endpoint",
	"Fix the flaky login test",
	"Document the deploy steps",
	"Cache the rig list",
	"Rename the config loader",
}

func newDevCommand() *cobra.Command {
	var (
		c          config
		tokens     string
		exitDone   bool
		timeout    time.Duration
		simWork    time.Duration
		beadsCount int
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a demo town on the local database: API, workers and simulated agents",
		Long: "dev creates the database if it is missing (DATABASE_URL, default the local server),\n" +
			"migrates it, seeds a demo town with one rig and a handful of issues, and runs the API,\n" +
			"the workers and a simulated agent runtime with dev-friendly timings. It prints each\n" +
			"bead as it moves open → in_progress → in_review → closed. Ctrl-C stops it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.AdminTokens = parseTokens(tokens)
			if len(c.AdminTokens) == 0 {
				c.AdminTokens = []string{randomToken()}
			}
			if c.AgentTokenSecret == "" {
				c.AgentTokenSecret = randomToken()
			}
			if err := c.validate(); err != nil {
				return err
			}
			if beadsCount < 1 || beadsCount > len(demoBeads) {
				return fmt.Errorf("--beads must be between 1 and %d", len(demoBeads))
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			created, err := db.EnsureDatabase(ctx, c.DatabaseURL)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if created {
				fmt.Fprintln(out, "created the database named in", redact(c.DatabaseURL))
			}
			return run(ctx, c, runOptions{
				api: true, workers: true,
				sim: agentrt.SimConfig{HeartbeatInterval: time.Second, WorkMin: simWork, WorkMax: simWork * 2},
				ready: func(ctx context.Context, a *app) error {
					err := demo(ctx, a, out, c.AdminTokens[0], demoBeads[:beadsCount], exitDone)
					if errors.Is(err, context.Canceled) || (errors.Is(err, context.DeadlineExceeded) && !exitDone) {
						return nil
					}
					return err
				},
			})
		},
	}
	bindCommon(cmd, &c)
	bindServe(cmd, &c, &tokens)
	f := cmd.Flags()
	f.BoolVar(&exitDone, "exit-when-done", false, "stop once every demo bead is closed (non-zero exit on timeout)")
	f.DurationVar(&timeout, "timeout", 0, "stop after this long (0: run until Ctrl-C)")
	f.DurationVar(&simWork, "sim-work", 2*time.Second, "simulated agents work at least this long on a bead")
	f.IntVar(&beadsCount, "beads", len(demoBeads), "how many demo issues to sling")
	// Dev-friendly cadence: a town with work ticks every second.
	_ = f.Set("active-interval", "1s")
	_ = f.Set("sweep-interval", "250ms")
	_ = f.Set("sentry-environment", "dev")
	return cmd
}

// demo seeds the demo town and reports bead transitions until every bead is closed.
func demo(ctx context.Context, a *app, out io.Writer, token string, titles []string, exitDone bool) error {
	now := time.Now()
	town, err := a.store.CreateTown(ctx, db.NewID(), "demo "+now.Format("15:04:05"), reconciler.TownConfig{}, now)
	if err != nil {
		return err
	}
	rigID := db.NewID()
	events := []db.NewEvent{{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{
		RigID: rigID, Name: "demo-repo", GitURL: "https://github.com/example/demo-repo", DefaultBranch: "main"}}}
	for _, t := range titles {
		events = append(events, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(), Payload: reconciler.BeadCreatedPayload{
			Type: reconciler.BeadIssue, Title: t, RigID: rigID, CreatedBy: "dev"}})
	}
	if _, err := a.svc.Events.Append(ctx, town.ID, events...); err != nil {
		return err
	}
	fmt.Fprintf(out, "\ngastown dev: demo town %s with rig demo-repo and %d issues\n", town.ID, len(titles))
	fmt.Fprintf(out, "  API        http://%s  (Authorization: Bearer %s)\n", a.addr, token)
	fmt.Fprintf(out, "  try        curl -H 'Authorization: Bearer %s' http://%s/v1/towns/%s/beads\n\n", token, a.addr, town.ID)

	seen := map[string]reconciler.BeadStatus{}
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	announced := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		beads, err := a.store.ListBeads(ctx, town.ID, db.BeadFilter{Limit: 1000})
		if err != nil {
			return err
		}
		agents, err := a.store.ListAgents(ctx, town.ID)
		if err != nil {
			return err
		}
		names := map[string]string{}
		for _, ag := range agents {
			names[ag.ID] = ag.Name
		}
		issues, closed := 0, 0
		for i := len(beads) - 1; i >= 0; i-- { // oldest first
			b := beads[i]
			if b.Type != reconciler.BeadIssue && b.Type != reconciler.BeadMergeRequest {
				continue
			}
			if b.Type == reconciler.BeadIssue {
				issues++
				if b.Status == reconciler.StatusClosed {
					closed++
				}
			}
			prev, ok := seen[b.ID]
			if ok && prev == b.Status {
				continue
			}
			seen[b.ID] = b.Status
			from := "new"
			if ok {
				from = string(prev)
			}
			who := ""
			if n := names[b.AssigneeID]; n != "" {
				who = " (" + n + ")"
			}
			fmt.Fprintf(out, "%s  %-13s %-28.28s %s → %s%s\n", time.Now().Format("15:04:05.000"), b.Type, b.Title, from, b.Status, who)
		}
		if issues == len(titles) && closed == issues && !announced {
			announced = true
			fmt.Fprintf(out, "\nall %d demo issues closed in %s through real River ticks\n", issues, time.Since(now).Round(time.Millisecond))
			if exitDone {
				return nil
			}
			fmt.Fprintln(out, "the API keeps running; Ctrl-C to stop")
		}
	}
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// redact hides the password of a connection string.
func redact(url string) string {
	cfg, err := db.ParseURL(url)
	if err != nil {
		return "DATABASE_URL"
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
