package jobs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"gastown/db"
)

// quietDriver is River's pgx driver without insert notifications. River would NOTIFY
// inside every transaction that inserts jobs, and Postgres serializes the commits of
// notifying transactions behind one lock that is held through their WAL flush: under
// load most ticks waited there (pg_stat_activity: Lock:object at commit). Workers still
// LISTEN; gastown announces new jobs itself after the inserting transaction committed,
// in a statement of its own that writes no WAL (see announcer).
type quietDriver struct{ *riverpgxv5.Driver }

// SupportsListenNotify implements riverdriver.Driver: River never notifies on insert.
func (quietDriver) SupportsListenNotify() bool { return false }

// announcer tells River's listening workers that a queue has new jobs. It notifies at
// most once per interval per queue, and when it holds one back it sends it at the end of
// the interval, so a job is never left to the fallback poll.
type announcer struct {
	store    *db.Store
	interval time.Duration
	logger   *slog.Logger

	mu       sync.Mutex
	last     map[string]time.Time
	trailing map[string]bool
}

func newAnnouncer(store *db.Store, interval time.Duration, logger *slog.Logger) *announcer {
	return &announcer{store: store, interval: interval, logger: logger, last: map[string]time.Time{}, trailing: map[string]bool{}}
}

// announce notifies the queue's listeners now, or at the end of the current interval.
func (a *announcer) announce(queue string) {
	a.mu.Lock()
	now := time.Now()
	wait := a.interval - now.Sub(a.last[queue])
	switch {
	case wait <= 0:
		a.last[queue] = now
		a.mu.Unlock()
		a.send(queue)
	case a.trailing[queue]:
		a.mu.Unlock() // already scheduled
	default:
		a.trailing[queue] = true
		a.mu.Unlock()
		time.AfterFunc(wait, func() {
			a.mu.Lock()
			a.trailing[queue] = false
			a.last[queue] = time.Now()
			a.mu.Unlock()
			a.send(queue)
		})
	}
}

func (a *announcer) send(queue string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.store.NotifyJobsInserted(ctx, queue); err != nil {
		// Workers poll as well: the job is only late.
		a.logger.Warn("announce new jobs", "queue", queue, "error", err)
	}
}
