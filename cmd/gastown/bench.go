package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"gastown/bench"
	"gastown/db"
	"gastown/jobs"
)

func newBenchCommand() *cobra.Command {
	var (
		opts   bench.Options
		asJSON bool
		logLvl string
		logFmt string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a benchmark workload against databases of its own, with baselines from the same run",
		Long: "bench creates its own databases on the server of DATABASE_URL (gastown_bench,\n" +
			"gastown_bench_pgbench, gastown_bench_river, gastown_bench_floor; the database in the\n" +
			"URL is never touched), measures baselines on that server — `pgbench -N` transactions/s,\n" +
			"River working no-op jobs with the tick queue's settings and, for active, the tick\n" +
			"floor (pgbench writing just the rows of a one-event tick on gastown's schema,\n" +
			"bench/tickfloor.sql) — then runs a workload with the workers\n" +
			"in-process and prints a table (or one JSON object with --json) of what it achieved,\n" +
			"as ratios to the baselines, against the targets.\n\n" +
			"Workloads:\n" +
			"  active  1,000 small towns; new issues go through their whole life cycle (simulated\n" +
			"          agents). Phase one measures capacity, phase two latency at half of it\n" +
			"          (the event rate at which the fleet runs half the ticks/s it sustained).\n" +
			"  burst   10,000 events committed at once to one town: how many ticks apply them.\n" +
			"  crash   two worker processes (gastown serve --no-api); the leader is killed with\n" +
			"          SIGKILL mid-run: how soon its towns tick again, and nothing lost or doubled.\n" +
			"  hot     one town sends at least 90% of the events (9 × --rate and at least 10,000/s,\n" +
			"          in appends of 50) among 200 normal towns (--rate in all, default 100/s):\n" +
			"          do the others suffer?\n" +
			"  idle    100,000 towns with nothing to do: what their idle cadence costs (statements/s\n" +
			"          when the server loads pg_stat_statements, else transactions/s).\n" +
			"  large   one town of 1,000 agents and 10,000 beads (and 1/8, 1/4, 1/2 of it):\n" +
			"          snapshot load, reconcile and invariants.",
		Example: "  gastown bench --workload active --duration 30s\n  gastown bench --workload burst --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var problems []string
			for _, c := range []struct {
				bad  bool
				what string
			}{
				{opts.Duration <= 0, "--duration must be positive"},
				{opts.BaselineDuration <= 0, "--baseline-duration must be positive"},
				{opts.Towns < 0, "--towns must not be negative (0: the workload's default)"},
				{opts.Rate < 0, "--rate must not be negative (0: the workload's default)"},
				{opts.TickWorkers < 1, "--tick-workers must be at least 1"},
				{opts.SideEffectWorkers < 1, "--side-effect-workers must be at least 1"},
				{opts.DrainBatch < 0, "--drain-batch must not be negative (0: the workers' default)"},
				{opts.FetchCooldown < 0, "--fetch-cooldown must not be negative"},
				{logFmt != "text" && logFmt != "json", "--log-format must be text or json"},
			} {
				if c.bad {
					problems = append(problems, c.what)
				}
			}
			if _, err := parseLevel(logLvl); err != nil {
				problems = append(problems, err.Error())
			}
			if len(problems) > 0 {
				return errors.New(strings.Join(problems, "; "))
			}
			if !cmd.Flags().Changed("baselines") {
				// Only the throughput workloads compare themselves with the baselines.
				opts.Baselines = opts.Workload == "active" || opts.Workload == "hot" || opts.Workload == "idle"
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts.Logger = newLogger(logLvl, logFmt)
			opts.Progress = cmd.ErrOrStderr()
			if exe, err := os.Executable(); err == nil {
				opts.Executable = exe
			}
			rep, err := bench.Run(ctx, opts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DatabaseURL, "database-url", envString("DATABASE_URL", db.DefaultURL), "the server to use, as a postgres:// URL (env DATABASE_URL); bench makes databases of its own there")
	hideSecrets(f, "database-url")
	f.StringVar(&opts.Workload, "workload", "active", "active, burst, crash, hot, idle or large")
	f.DurationVar(&opts.Duration, "duration", 30*time.Second, "how long the workload is measured")
	f.IntVar(&opts.Towns, "towns", 0, "number of towns (0: the workload's default)")
	f.Float64Var(&opts.Rate, "rate", 0, "events/s of the latency phase (active: default the rate at which the fleet runs half the ticks/s of its measured capacity; hot: the normal towns' rate, default 100)")
	f.IntVar(&opts.TickWorkers, "tick-workers", 8, "tick workers (and pgbench clients, and River baseline workers)")
	f.IntVar(&opts.DrainBatch, "drain-batch", 0, "most events one tick drains (0: the workers' default, 500)")
	f.IntVar(&opts.SideEffectWorkers, "side-effect-workers", 32, "side-effect workers")
	f.DurationVar(&opts.FetchCooldown, "fetch-cooldown", jobs.DefaultFetchCooldown, "River fetch cooldown of the workers and the River baseline")
	f.DurationVar(&opts.BaselineDuration, "baseline-duration", 10*time.Second, "how long each baseline runs")
	f.BoolVar(&opts.Baselines, "baselines", false, "run pgbench -N and the River baseline first (when not given: yes for active, hot and idle, no for the others; without them the ratios are 0)")
	f.StringVar(&opts.CPUProfile, "cpuprofile", "", "write a Go CPU profile of the first measurement window to this file, for go tool pprof (active, hot and idle; the other workloads have no such window)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of the table")
	f.StringVar(&logLvl, "log-level", "warn", "log level of the workers")
	f.StringVar(&logFmt, "log-format", "text", "log format: text or json")
	return cmd
}

// printReport writes the report as a readable table.
func printReport(out io.Writer, r *bench.Report) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("workload", "%s (%d towns, %.1f s measured)", r.Workload, r.Towns, r.DurationS)
	if r.PgbenchTPS > 0 {
		row("baseline pgbench -N", "%.0f tx/s", r.PgbenchTPS)
		row("baseline River no-op", "%.0f jobs/s", r.RiverNoopJobsPerSec)
	}
	if r.TickFloorTPS > 0 {
		row("baseline tick floor", "%.0f ticks/s (%.2f× pgbench -N: the rows of a one-event tick alone)", r.TickFloorTPS, r.TickFloorTPS/r.PgbenchTPS)
	}
	if r.TicksPerSec > 0 {
		floor := ""
		if r.RatioToTickFloor > 0 {
			floor = fmt.Sprintf(", %.2f× the tick floor", r.RatioToTickFloor)
		}
		row("ticks/s", "%.0f (%.2f× pgbench -N, %.2f× River no-op%s)", r.TicksPerSec, r.RatioToPgbench, r.RatioToRiverNoop, floor)
	}
	if r.EventsPerSec > 0 {
		row("events/s", "%.0f", r.EventsPerSec)
		row("event → applied latency", "p50 %.1f ms, p99 %.1f ms%s", r.LatencyP50ms, r.LatencyP99ms, rateNote(r.LatencyRate, r.LatencyTicksPerSec, r.LatencyLoad))
		if q, t := r.LatencyQueued, r.LatencyTick; q != nil && t != nil {
			row("  queued, then ticking", "p50 %.1f + %.1f ms, p99 %.1f + %.1f ms (commit → tick holds the town → tick commits)", q.P50, t.P50, q.P99, t.P99)
		}
	}
	if len(r.Phases) > 0 {
		var parts []string
		for _, k := range []string{"drain", "snapshot", "reconcile", "apply", "commit", "total"} {
			if q, ok := r.Phases[k]; ok {
				parts = append(parts, fmt.Sprintf("%s %.2f/%.2f", k, q.P50, q.P99))
			}
		}
		row("tick ms p50/p99", "%s", strings.Join(parts, ", "))
	}
	if r.BurstEvents > 0 {
		row("burst", "%d events in %d ticks (bound %d)", r.BurstEvents, r.BurstTicks, r.BurstBound)
	}
	if r.CrashRecoveryS > 0 || r.CrashOrphanedTowns > 0 {
		row("crash", "%d ticks in flight on the killed worker; their towns ticked again after %.1f s; events appended just after the kill waited at most %.1f s",
			r.CrashOrphanedTowns, r.CrashRecoveryS, r.CrashLatencyAfterKillS)
	}
	if r.HotTownEventsPerSec > 0 {
		row("hot town", "%.0f events/s; other towns p99 %.1f ms, queued %.1f (alone %.1f ms, queued %.1f)",
			r.HotTownEventsPerSec, r.OtherTownsP99, r.OtherTownsQueuedP99, r.OtherTownsP99Alone, r.OtherTownsQueuedP99Alone)
	}
	for _, s := range r.Sizes {
		row(fmt.Sprintf("town of %d beads, %d agents", s.Beads, s.Agents), "snapshot %.1f ms, reconcile %.2f ms (alone %.2f), invariants %.2f ms", s.SnapshotP50, s.ReconcileP50, s.ReconcileAloneP50, s.InvariantsP50)
	}
	if len(r.QueueDepth) > 0 {
		row("tick queue depth (1/s)", "%v", r.QueueDepth)
	}
	if r.RoundTripsPerTick > 0 {
		row("round trips per tick", "%.1f (the whole workload's, a pipeline counted once)", r.RoundTripsPerTick)
	}
	if r.StatementsPerSec > 0 {
		row("Postgres statements/s", "%.1f (pg_stat_statements)", r.StatementsPerSec)
	}
	if r.PostgresTPS > 0 {
		row("Postgres transactions/s", "%.0f (%.1f per tick)", r.PostgresTPS, r.TxPerTick)
	}
	if r.CPUGastownPct > 0 || r.CPUPostgresPct > 0 {
		row("CPU (% of one core)", "gastown %.0f%%, Postgres (rest of the machine) %.0f%%, taken by the hypervisor (steal) %.0f%%",
			r.CPUGastownPct, r.CPUPostgresPct, r.CPUStealPct)
	}
	if r.BytesPerTickRow > 0 {
		row("reconciler_ticks", "%.0f bytes per row (steady state; %.0f on disk now, with fixed overhead and pages extended ahead)", r.BytesPerTickRow, r.BytesPerTickRowOnDisk)
	}
	if r.TicksPerSecWithoutRow > 0 {
		row("tick row cost", "%.1f%% of ticks/s (%.0f ticks/s with the row, %.0f without)", r.TickRowCostPct, r.TicksPerSecWithRow, r.TicksPerSecWithoutRow)
	}
	if r.TownsHOTPct > 0 {
		row("towns updates HOT", "%.1f%%", r.TownsHOTPct)
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	_ = w.Flush()
	if len(r.Statements) > 0 {
		fmt.Fprintln(out, "\ntop statements (pg_stat_statements, capacity window):")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  total ms\tcalls\tmean ms\tquery\n")
		for _, st := range r.Statements {
			fmt.Fprintf(tw, "  %.0f\t%d\t%.3f\t%s\n", st.TotalMS, st.Calls, st.MeanMS, st.Query)
		}
		_ = tw.Flush()
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(out, "\ntargets:")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		sort.SliceStable(r.Targets, func(i, j int) bool { return r.Targets[i].Met && !r.Targets[j].Met })
		for _, t := range r.Targets {
			mark := "MET"
			if !t.Met {
				mark = "missed"
			}
			fmt.Fprintf(tw, "  %s\t%.2f\t%s\t%s\n", t.Name, t.Measured, t.Goal, mark)
		}
		_ = tw.Flush()
	}
}

func rateNote(rate, ticks, load float64) string {
	switch {
	case rate <= 0:
		return ""
	case ticks <= 0:
		return fmt.Sprintf(" at %.0f events/s", rate)
	}
	return fmt.Sprintf(" at %.0f events/s (%.0f ticks/s, %.0f%% of capacity)", rate, ticks, 100*load)
}
