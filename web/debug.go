package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"gastown/db"
	"gastown/jobs"
	"gastown/reconciler"
)

// reconcileDryRun runs the same drain + reconcile + apply as a real tick inside a
// transaction that is always rolled back, and shows what the tick would do. It waits for
// the town lock at most DryRunLockTimeout and answers 409 when a tick holds it longer.
func (s *Server) reconcileDryRun(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	tx, err := s.store.Pool.Begin(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(c)) }()
	// SET LOCAL takes no parameters; the value is formatted from a duration we own.
	if _, err := tx.Exec(c, fmt.Sprintf("SET LOCAL lock_timeout = '%dms'", s.cfg.DryRunLockTimeout.Milliseconds())); err != nil {
		s.fail(c, err)
		return
	}
	res, err := s.svc.Ticker.Tick(c, tx, townID, jobs.TickOptions{DryRun: true})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		err = db.ErrTownBusy
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	actions, err := reconciler.EncodeActions(res.Actions)
	if err != nil {
		s.fail(c, err)
		return
	}
	byType := reconciler.CountByType(res.Actions)
	c.JSON(http.StatusOK, gin.H{
		"actions": actions,
		"metrics": gin.H{
			"actionsEmitted":    len(res.Actions),
			"actionsByType":     byType,
			"actionsSkipped":    res.Apply.Skipped,
			"eventsDrained":     res.Drain.Drained,
			"pendingEventCount": res.PendingEventCount,
			"sideEffects":       len(res.SideEffects),
		},
		"clock": res.ClockAt,
	})
}
