package reconciler

import (
	"fmt"
	"time"
)

// Options are the inputs of Reconcile besides the snapshot and the clock.
type Options struct {
	// Draining suppresses dispatch decisions (SPEC.md §1.6). Taken from the town row.
	Draining bool
}

// Reconcile evaluates the rule passes in the reference order (Agents → Beads →
// ReviewQueue) over one snapshot and returns the concatenated actions. It reads only s,
// opts and now.
func Reconcile(s *Snapshot, opts Options, now time.Time) []Action {
	s.Index()
	r := &run{s: s, opts: opts, now: now}
	r.breakerOpen, r.breakerCount = circuitBreaker(s, now)
	r.agents()
	r.beads()
	r.reviewQueue()
	return r.actions
}

// run carries one evaluation of the rules.
type run struct {
	s            *Snapshot
	opts         Options
	now          time.Time
	breakerOpen  bool
	breakerCount int
	actions      []Action
}

func (r *run) emit(a ...Action) { r.actions = append(r.actions, a...) }

// circuitBreaker counts beads with a dispatch attempt in the last CircuitBreakerWindow,
// at least one attempt, and a status other than closed (SPEC.md §4.0). It is open at
// CircuitBreakerThreshold.
func circuitBreaker(s *Snapshot, now time.Time) (open bool, count int) {
	for i := range s.Beads {
		b := &s.Beads[i]
		if b.DispatchAttempts > 0 && b.Status != StatusClosed &&
			!b.LastDispatchAttemptAt.IsZero() && now.Sub(b.LastDispatchAttemptAt) <= CircuitBreakerWindow {
			count++
		}
	}
	return count >= CircuitBreakerThreshold, count
}

func breakerMessage(n int) string {
	return fmt.Sprintf("Dispatch circuit breaker is OPEN: %d dispatch failures in the last 30 minutes. "+
		"Automatic dispatch is paused until failures age out.", n)
}
