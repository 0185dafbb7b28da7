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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gastown/agentrt"
	"gastown/codehost"
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
		towns      int
		rigs       int
		seed       uint64
		crash      float64
		hang       float64
		silent     float64
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a demo town on the local database: API, workers and simulated agents",
		Long: "dev creates the database if it is missing (DATABASE_URL, default the local server),\n" +
			"migrates it, seeds demo towns with rigs and a handful of issues, and runs the API, the\n" +
			"workers, a simulated agent runtime and a simulated code host with dev-friendly timings\n" +
			"(ticks every second; PRs polled every 2 s; GUPP warns after 20 s, escalates after 40 s,\n" +
			"force-stops after 60 s). It prints each bead as it moves open → in_progress →\n" +
			"in_review → closed, and each GUPP nudge. With --towns 2 or more, PRs get review\n" +
			"comments, failing checks and conflicts that fix-up beads resolve, a refinery merges\n" +
			"them, and some agents hang until GUPP nudges them. Ctrl-C stops it.",
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
			if towns < 1 || towns > 4 {
				return errors.New("--towns must be 1 (direct merges), 2 (+ a town whose refinery opens PRs), 3 (+ a review-and-merge convoy) or 4 (+ a review-then-land convoy)")
			}
			if rigs < 1 || rigs > 5 {
				return errors.New("--rigs must be between 1 and 5")
			}
			if !cmd.Flags().Changed("hang") && towns >= 2 {
				hang = 0.15 // the full demo shows GUPP nudging a hung agent awake
			}
			if crash < 0 || hang < 0 || silent < 0 || crash+hang+silent > 1 {
				return errors.New("--crash, --hang and --silent are probabilities that add up to at most 1")
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
				sim: agentrt.SimConfig{HeartbeatInterval: time.Second, WorkMin: simWork, WorkMax: simWork * 2, Seed: seed,
					CrashProb: crash, HangProb: hang, SilentProb: silent},
				evolution: codehost.Evolution{Seed: seed, CommentProb: 0.15, FailProb: 0.05, ConflictProb: 0.1, MergedOutsideProb: 0.05},
				ready: func(ctx context.Context, a *app) error {
					err := demo(ctx, a, out, c.AdminTokens[0], demoBeads[:beadsCount], towns, rigs, exitDone)
					if errors.Is(err, context.Canceled) || (errors.Is(err, context.DeadlineExceeded) && !exitDone) {
						return nil
					}
					return err
				},
			})
		},
	}
	bindCommon(cmd, &c)
	// Dev-friendly cadence: a town with work ticks every second.
	bindServe(cmd, &c, &tokens, serveDefaults{activeInterval: time.Second, sweepInterval: 250 * time.Millisecond, sentryEnvironment: "dev"})
	f := cmd.Flags()
	f.BoolVar(&exitDone, "exit-when-done", false, "stop once every demo bead is closed (non-zero exit on timeout)")
	f.DurationVar(&timeout, "timeout", 0, "stop after this long (0: run until Ctrl-C)")
	f.DurationVar(&simWork, "sim-work", 2*time.Second, "simulated agents work at least this long on a bead")
	f.IntVar(&beadsCount, "beads", len(demoBeads), "how many demo issues to sling per town")
	f.IntVar(&towns, "towns", 1, "demo towns: 1 (direct merges), 2 (+ PRs polled, reviewed and merged on the simulated host), 3 (+ a review-and-merge convoy), 4 (+ a review-then-land convoy)")
	f.IntVar(&rigs, "rigs", 1, "rigs per demo town (issues are spread over them)")
	f.Uint64Var(&seed, "seed", 1, "seed of the simulated agents and code host: the same seed, the same run")
	f.Float64Var(&crash, "crash", 0, "chance a simulated agent crashes before it finishes")
	f.Float64Var(&hang, "hang", 0, "chance a simulated agent hangs (heartbeats without activity until a GUPP nudge wakes it; default 0.15 with --towns 2 or more)")
	f.Float64Var(&silent, "silent", 0, "chance a simulated agent goes silent (no heartbeat: A1's case)")
	return cmd
}

// demoTown is one town of the demo.
type demoTown struct {
	id, name string
	issues   int
	since    time.Time
}

// demo seeds the demo towns and reports bead transitions until every issue is closed.
func demo(ctx context.Context, a *app, out io.Writer, token string, titles []string, towns, rigs int, exitDone bool) error {
	now := time.Now()
	yes := true
	noDelay := 0
	timings := &reconciler.Timings{PRPollInterval: reconciler.Duration(2 * time.Second), GUPPWarn: reconciler.Duration(20 * time.Second),
		GUPPEscalate: reconciler.Duration(40 * time.Second), GUPPForceStop: reconciler.Duration(time.Minute)}
	specs := []struct {
		name   string
		cfg    reconciler.TownConfig
		convoy string // merge mode, "" for plain issues
	}{
		{"direct", reconciler.TownConfig{Timings: timings}, ""},
		{"prs", reconciler.TownConfig{MergeStrategy: reconciler.MergeStrategyPR, Timings: timings,
			Refinery: &reconciler.RefineryConfig{AutoResolvePRFeedback: &yes, AutoMergeDelayMinutes: &noDelay}}, ""},
		{"convoy", reconciler.TownConfig{Timings: timings}, reconciler.MergeModeAndMerge},
		{"landing", reconciler.TownConfig{Timings: timings}, reconciler.MergeModeThenLand},
	}[:towns]
	var demoTowns []demoTown
	for _, sp := range specs {
		town, err := a.store.CreateTown(ctx, db.NewID(), "demo-"+sp.name+" "+now.Format("15:04:05"), sp.cfg, now)
		if err != nil {
			return err
		}
		var events []db.NewEvent
		rigIDs := make([]string, rigs)
		for r := range rigs {
			rigIDs[r] = db.NewID()
			events = append(events, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{
				RigID: rigIDs[r], Name: fmt.Sprintf("demo-repo-%d", r+1), GitURL: fmt.Sprintf("https://github.com/example/demo-%s-%d", sp.name, r+1), DefaultBranch: "main"}})
		}
		if sp.convoy != "" {
			tasks := make([]reconciler.ConvoyTask, len(titles))
			for i, t := range titles {
				tasks[i] = reconciler.ConvoyTask{BeadID: db.NewID(), Title: t, RigID: rigIDs[0]}
				if i > 0 {
					tasks[i].BlockedBy = []string{tasks[i-1].BeadID} // a chain: one after the other
				}
			}
			events = append(events, db.NewEvent{Type: reconciler.EventConvoyCreated, BeadID: db.NewID(), Payload: reconciler.ConvoyCreatedPayload{
				Title: "demo " + sp.convoy + " convoy", MergeMode: sp.convoy, Tasks: tasks}})
		} else {
			for i, t := range titles {
				events = append(events, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(), Payload: reconciler.BeadCreatedPayload{
					Type: reconciler.BeadIssue, Title: t, RigID: rigIDs[i%rigs], CreatedBy: "dev"}})
			}
		}
		if _, err := a.svc.Events.Append(ctx, town.ID, events...); err != nil {
			return err
		}
		demoTowns = append(demoTowns, demoTown{id: town.ID, name: sp.name, issues: len(titles), since: now})
		fmt.Fprintf(out, "\ngastown dev: town %-7s %s — %d issues\n", sp.name, town.ID, len(titles))
	}
	fmt.Fprintf(out, "  API        http://%s  (Authorization: Bearer %s)\n", a.addr, token)
	fmt.Fprintf(out, "  dashboard  http://%s/dashboard   River UI http://%s/riverui/   (user any, password the token)\n", a.addr, a.addr)
	fmt.Fprintf(out, "  try        curl -H 'Authorization: Bearer %s' http://%s/v1/towns/%s/beads\n\n", token, a.addr, demoTowns[0].id)

	seen := map[string]string{}
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	announced := false
	live := isTerminal(out)
	var lines []string // a terminal shows the last transitions under a live summary
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		allClosed := true
		total := 0
		var buf strings.Builder
		for _, dt := range demoTowns {
			w := out
			if live {
				w = &buf
			}
			closed, liveConvoys, err := reportTown(ctx, a, w, dt, seen)
			if err != nil {
				return err
			}
			total += closed
			if closed < dt.issues || liveConvoys > 0 {
				allClosed = false
			}
		}
		if live {
			if buf.Len() > 0 {
				lines = append(lines, strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")...)
				if len(lines) > 12 {
					lines = lines[len(lines)-12:]
				}
			}
			if err := drawLive(ctx, a, out, demoTowns, lines, token); err != nil {
				return err
			}
		}
		if allClosed && !announced {
			announced = true
			fmt.Fprintf(out, "\nall %d demo issues finished in %s through real River ticks\n", total, time.Since(now).Round(time.Millisecond))
			if exitDone {
				return nil
			}
			fmt.Fprintln(out, "the API keeps running; Ctrl-C to stop")
		}
	}
}

// reportTown prints the beads of one demo town whose status changed and returns how many
// of its issues are finished (closed or failed) and how many of its convoys are open.
func reportTown(ctx context.Context, a *app, out io.Writer, dt demoTown, seen map[string]string) (closed, liveConvoys int, err error) {
	beads, err := a.store.ListBeads(ctx, dt.id, db.BeadFilter{Limit: 1000})
	if err != nil {
		return 0, 0, err
	}
	agents, err := a.store.ListAgents(ctx, dt.id)
	if err != nil {
		return 0, 0, err
	}
	names := map[string]string{}
	for _, ag := range agents {
		names[ag.ID] = ag.Name
	}
	for i := len(beads) - 1; i >= 0; i-- { // oldest first
		b := beads[i]
		if b.Type == reconciler.BeadIssue && b.Status.Terminal() && !b.HasLabel(reconciler.LabelPRFeedback) &&
			!b.HasLabel(reconciler.LabelPRConflict) && !b.HasLabel(reconciler.LabelTriage) && !b.HasLabel(reconciler.LabelTriageRequest) {
			closed++ // finished: closed, or failed for good (crashed agents with --crash)
		}
		if b.Type == reconciler.BeadConvoy && !b.Status.Terminal() {
			liveConvoys++
		}
		if b.Type != reconciler.BeadIssue && b.Type != reconciler.BeadMergeRequest && b.Type != reconciler.BeadConvoy {
			continue
		}
		prev, ok := seen[b.ID]
		if ok && prev == string(b.Status) {
			continue
		}
		seen[b.ID] = string(b.Status)
		from := "new"
		if ok {
			from = prev
		}
		who := ""
		if n := names[b.AssigneeID]; n != "" {
			who = " (" + n + ")"
		}
		fmt.Fprintf(out, "%s  %-7s %-13s %-28.28s %s → %s%s\n", time.Now().Format("15:04:05.000"), dt.name, b.Type, b.Title, from, b.Status, who)
	}
	// GUPP: an agent whose SDK activity froze is nudged, escalated, then force-stopped.
	nudges, err := a.store.RecentReconcilerNudges(ctx, dt.id, dt.since)
	if err != nil {
		return 0, 0, err
	}
	stamp := time.Now().Format("15:04:05.000")
	for _, n := range nudges {
		key := "nudge:" + n.AgentID + n.Source
		if seen[key] == n.LastAt.String() {
			continue
		}
		seen[key] = n.LastAt.String()
		fmt.Fprintf(out, "%s  %-7s GUPP %-8s nudge → %s (no SDK activity)\n", stamp, dt.name, strings.TrimPrefix(n.Source, "reconciler:"), names[n.AgentID])
	}
	for _, ag := range agents {
		key := "agent:" + ag.ID
		if prev := seen[key]; ag.Status == reconciler.AgentStalled && prev != string(ag.Status) {
			fmt.Fprintf(out, "%s  %-7s GUPP force-stopped %s\n", stamp, dt.name, ag.Name)
		}
		seen[key] = string(ag.Status)
	}
	return closed, liveConvoys, nil
}

// isTerminal reports whether out is a terminal (the live view redraws in place there;
// piped output gets plain lines).
func isTerminal(out io.Writer) bool {
	f, ok := out.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// drawLive redraws the live view: beads by status per town, ticks per second, the last
// tick's actions, and the latest transitions.
func drawLive(ctx context.Context, a *app, out io.Writer, towns []demoTown, lines []string, token string) error {
	var b strings.Builder
	b.WriteString("\x1b[H\x1b[2J")
	fmt.Fprintf(&b, "gastown dev — API http://%s  dashboard /dashboard  River UI /riverui/  (token %s)\n\n", a.addr, token)
	fmt.Fprintf(&b, "%-8s %-28s %-9s %s\n", "TOWN", "ISSUES open/prog/review/done", "TICKS/S", "LATEST ACTIONS")
	for _, dt := range towns {
		beads, err := a.store.ListBeads(ctx, dt.id, db.BeadFilter{Type: reconciler.BeadIssue, Limit: 1000})
		if err != nil {
			return err
		}
		count := map[reconciler.BeadStatus]int{}
		for _, bd := range beads {
			count[bd.Status]++
		}
		ticks, err := a.store.ListTicks(ctx, dt.id, 50)
		if err != nil {
			return err
		}
		recent, last := 0, "-"
		for _, tk := range ticks {
			if time.Since(tk.StartedAt) <= 5*time.Second {
				recent++
			}
			if last == "-" && len(tk.ActionsByType) > 0 { // the latest tick that acted
				parts := make([]string, 0, len(tk.ActionsByType))
				for k, v := range tk.ActionsByType {
					parts = append(parts, fmt.Sprintf("%s×%d", k, v))
				}
				sort.Strings(parts)
				last = strings.Join(parts, " ")
			}
		}
		fmt.Fprintf(&b, "%-8s %-28s %-9.1f %s\n", dt.name, fmt.Sprintf("%d/%d/%d/%d", count[reconciler.StatusOpen], count[reconciler.StatusInProgress],
			count[reconciler.StatusInReview], count[reconciler.StatusClosed]+count[reconciler.StatusFailed]), float64(recent)/5, last)
	}
	b.WriteString("\nlatest:\n")
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	_, err := io.WriteString(out, b.String())
	return err
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
