// Package obs is gastown's one link to Sentry: it reports dead events, invariant
// violations and unexpected job errors. With no DSN it only logs.
package obs

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"gastown/db"
	"gastown/reconciler"
)

// Sentry reports to Sentry through its own hub.
type Sentry struct {
	hub    *sentry.Hub
	logger *slog.Logger
}

// NewSentry initialises a client for dsn; an empty dsn gives a reporter that only logs
// (and costs nothing).
func NewSentry(dsn, environment, release string, logger *slog.Logger) (*Sentry, error) {
	s := &Sentry{logger: logger}
	if dsn == "" {
		return s, nil
	}
	client, err := sentry.NewClient(sentry.ClientOptions{Dsn: dsn, Environment: environment, Release: release})
	if err != nil {
		return nil, fmt.Errorf("sentry client: %w", err)
	}
	s.hub = sentry.NewHub(client, sentry.NewScope())
	return s, nil
}

// Flush waits up to timeout for queued reports to be sent.
func (s *Sentry) Flush(timeout time.Duration) {
	if s.hub != nil {
		s.hub.Flush(timeout)
	}
}

// EventDead reports an event that failed for the last time.
func (s *Sentry) EventDead(townID string, f db.EventFailure) {
	s.capture(sentry.LevelError, fmt.Sprintf("Town event %s (seq %d) is dead: %v", f.Event.Type, f.Event.Seq, f.Err),
		map[string]string{"town_id": townID, "event_type": f.Event.Type})
}

// InvariantViolated reports an invariant violation.
func (s *Sentry) InvariantViolated(townID string, v reconciler.Violation) {
	s.capture(sentry.LevelError, fmt.Sprintf("Reconciler invariant #%d violated: %s", v.Invariant, v.Message),
		map[string]string{"town_id": townID, "invariant": strconv.Itoa(v.Invariant)})
}

func (s *Sentry) capture(level sentry.Level, msg string, tags map[string]string) {
	if s.hub == nil {
		return
	}
	s.hub.WithScope(func(scope *sentry.Scope) {
		scope.SetLevel(level)
		scope.SetTags(tags)
		s.hub.CaptureMessage(msg)
	})
}

// Panicked reports a recovered panic of an HTTP handler.
func (s *Sentry) Panicked(method, path string, value any) {
	s.capture(sentry.LevelFatal, fmt.Sprintf("HTTP %s %s panicked: %v", method, path, value), map[string]string{"route": path})
}

// HandleError implements river.ErrorHandler: job errors are logged by River; only errors
// that exhausted their attempts go to Sentry.
func (s *Sentry) HandleError(_ context.Context, job *rivertype.JobRow, err error) *river.ErrorHandlerResult {
	if job.Attempt >= job.MaxAttempts {
		s.capture(sentry.LevelError, fmt.Sprintf("job %s %d failed for good: %v", job.Kind, job.ID, err),
			map[string]string{"job_kind": job.Kind})
	}
	return nil
}

// HandlePanic implements river.ErrorHandler.
func (s *Sentry) HandlePanic(_ context.Context, job *rivertype.JobRow, panicVal any, trace string) *river.ErrorHandlerResult {
	s.logger.Error("job panicked", "kind", job.Kind, "job_id", job.ID, "panic", panicVal, "trace", trace)
	s.capture(sentry.LevelFatal, fmt.Sprintf("job %s %d panicked: %v", job.Kind, job.ID, panicVal),
		map[string]string{"job_kind": job.Kind})
	return nil
}
