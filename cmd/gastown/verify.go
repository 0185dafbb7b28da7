package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"gastown/db"
	"gastown/jobs"
)

// errDiverged makes verify-history exit non-zero after it has printed the divergence.
var errDiverged = errors.New("history did not reproduce")

func newVerifyHistoryCommand() *cobra.Command {
	var (
		c       config
		all     bool
		asJSON  bool
		keepOn  bool
		maxTown int
	)
	cmd := &cobra.Command{
		Use:   "verify-history [TOWN...] [--all]",
		Short: "Replay towns' whole retained history and fail on the first tick that does not reproduce",
		Long: "verify-history restores each town's earliest retained checkpoint inside a transaction it\n" +
			"rolls back and re-runs every recorded tick with its recorded inputs (events, heartbeats,\n" +
			"clock), comparing the actions and the state hash with what the tick recorded. It exits 1\n" +
			"at the first divergence, printing the tick and a diff: run it after changing the rules to\n" +
			"see which real histories the change would alter. Each town is locked while it replays\n" +
			"(its live ticks back off and retry); point it at a copy of the database to leave\n" +
			"production alone.\n" +
			"Ctrl-C stops it.",
		RunE: func(cmd *cobra.Command, args []string) error {
			c.MaxConns = 4
			if err := c.validate(); err != nil {
				return err
			}
			switch {
			case len(args) == 0 && !all:
				return errors.New("name the towns to verify, or pass --all")
			case len(args) > 0 && all:
				return errors.New("name the towns to verify or pass --all, not both")
			case maxTown < 1:
				return errors.New("--max-towns must be at least 1")
			}
			for _, a := range args {
				if !db.IsID(a) {
					return fmt.Errorf("%q is not a town id (a UUID)", a)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			pool, err := db.Connect(ctx, c.DatabaseURL, int32(c.MaxConns))
			if err != nil {
				return err
			}
			defer pool.Close()
			store := db.NewStore(pool)
			svc, err := jobs.New(jobs.Deps{Store: store, Logger: newLogger(c.LogLevel, c.LogFormat)}, jobs.Config{}, false)
			if err != nil {
				return err
			}
			var towns []string
			for _, a := range args {
				if a = strings.ToLower(a); !slices.Contains(towns, a) {
					towns = append(towns, a)
				}
			}
			if all {
				list, err := store.ListTowns(ctx, maxTown)
				if err != nil {
					if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined table
						return errors.New("the database has no gastown tables: run `gastown migrate` first (or point DATABASE_URL at gastown's database)")
					}
					return err
				}
				for _, t := range list {
					towns = append(towns, t.ID)
				}
			}
			return verifyTowns(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), svc, towns, asJSON, !keepOn)
		},
	}
	bindCommon(cmd, &c)
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "verify every town")
	f.IntVar(&maxTown, "max-towns", 100000, "with --all, at most this many towns")
	f.BoolVar(&asJSON, "json", false, "print each town's replay report as a JSON line")
	f.BoolVar(&keepOn, "keep-going", false, "after a divergence, replay the rest of the town's history and the other towns too")
	return cmd
}

func verifyTowns(ctx context.Context, out, errOut io.Writer, svc *jobs.Service, towns []string, asJSON, stopAtFirst bool) error {
	diverged := false
	for _, town := range towns {
		bar := newCountBar(errOut, "town "+shortID(town))
		rep, err := svc.Replay(ctx, town, jobs.ReplayOptions{FromFirstCheckpoint: true, StopAtDivergence: stopAtFirst, Progress: bar.update})
		bar.done()
		switch {
		case errors.Is(err, db.ErrNotFound):
			return fmt.Errorf("town %s does not exist", town)
		case errors.Is(err, jobs.ErrNoHistory):
			fmt.Fprintf(out, "town %s: %v\n", town, err)
			continue
		case err != nil:
			return fmt.Errorf("town %s: %w", town, err)
		}
		if asJSON {
			line, _ := json.Marshal(rep)
			fmt.Fprintln(out, string(line))
		}
		if !rep.CheckpointValid {
			fmt.Fprintf(out, "town %s: warning: the checkpoint of tick %d does not match its recorded hash\n", town, rep.CheckpointTick)
		}
		if d := rep.FirstDivergence; d != nil {
			diverged = true
			if !asJSON {
				fmt.Fprintf(out, "town %s: tick %d (clock %s) did not reproduce (%d ticks re-run from the checkpoint of tick %d):\n%s\n",
					town, d.TickID, d.ClockAt.Format("2006-01-02T15:04:05.000000Z07:00"), rep.TicksReplayed, rep.CheckpointTick, indent(d.Diff))
			}
			if stopAtFirst {
				return errDiverged
			}
			continue
		}
		if !asJSON {
			fmt.Fprintf(out, "town %s: %d recorded ticks reproduced (from the checkpoint of tick %d, through tick %d)\n",
				town, rep.TicksReplayed, rep.CheckpointTick, rep.To)
		}
	}
	if diverged {
		return errDiverged
	}
	return nil
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// countBar shows how many of a known number of steps are done: redrawn in place on a
// terminal, silent otherwise (the result lines say what happened).
type countBar struct {
	w     io.Writer
	label string
	tty   bool
	drawn bool
}

func newCountBar(w io.Writer, label string) *countBar {
	return &countBar{w: w, label: label, tty: isTerminal(w)}
}

func (b *countBar) update(done, total int) {
	if !b.tty || total == 0 {
		return
	}
	const width = 30
	n := done * width / total
	fmt.Fprintf(b.w, "\r%s [%s%s] %d/%d ticks", b.label, strings.Repeat("#", n), strings.Repeat(".", width-n), done, total)
	b.drawn = true
}

func (b *countBar) done() {
	if b.drawn {
		fmt.Fprint(b.w, "\r\033[K")
	}
}
