//go:build chaos

package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"gastown/jobs"
)

func init() { chaosFailpoint = killAtFromEnv }

// killAtFromEnv reads GASTOWN_CHAOS_KILL_AT=STAGE:N (a stage of jobs.Stages; N ≥ 1): the
// N-th time any worker of this process reaches STAGE, the process writes one line to
// stderr ("chaos: SIGKILL at STAGE #N town TOWN") and kills itself with SIGKILL — no
// deferred function, no rollback, no goodbye to Postgres. Unset: no failpoint.
func killAtFromEnv() (func(ctx context.Context, stage, townID string) error, error) {
	spec := os.Getenv("GASTOWN_CHAOS_KILL_AT")
	if spec == "" {
		return nil, nil
	}
	stage, count, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	if !ok || err != nil || n < 1 || !slices.Contains(jobs.Stages, stage) {
		return nil, fmt.Errorf("GASTOWN_CHAOS_KILL_AT=%q: want STAGE:N with N ≥ 1 and STAGE one of %s", spec, strings.Join(jobs.Stages, ", "))
	}
	var reached atomic.Int64
	return func(_ context.Context, at, townID string) error {
		if at != stage || reached.Add(1) != int64(n) {
			return nil
		}
		fmt.Fprintf(os.Stderr, "chaos: SIGKILL at %s #%d town %s\n", stage, n, townID)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}, nil
}
