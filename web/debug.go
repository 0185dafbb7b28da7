package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

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
	tx, err := s.store.BeginWaiting(c, s.cfg.DryRunLockTimeout)
	if err != nil {
		s.fail(c, err)
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(c)) }()
	res, err := s.svc.Ticker.Tick(c, tx, townID, jobs.TickOptions{DryRun: true})
	if err != nil {
		s.fail(c, db.BusyOr(err))
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

// townStatus answers the shape of SPEC.md §8.1.
func (s *Server) townStatus(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	now := s.clock()
	st, err := s.store.TownStatus(c, townID, now)
	if err != nil {
		s.fail(c, err)
		return
	}
	agents := gin.H{"working": 0, "waiting": 0, "idle": 0, "stalled": 0, "dead": 0, "total": len(st.Agents)}
	orphaned := 0
	agentMeta := make([]gin.H, 0, len(st.Agents))
	for _, a := range st.Agents {
		agents[string(a.Status)] = agents[string(a.Status)].(int) + 1
		if a.Status == reconciler.AgentIdle && a.HookBeadID != "" && (a.LastActivityAt.IsZero() || now.Sub(a.LastActivityAt) > 5*time.Minute) {
			orphaned++
		}
		agentMeta = append(agentMeta, gin.H{"bead_id": a.ID, "name": a.Name, "role": a.Role, "status": a.Status,
			"current_hook_bead_id": nullable(a.HookBeadID), "dispatch_attempts": a.DispatchAttempts, "last_activity_at": nullableTime(a.LastActivityAt)})
	}
	triage := 0
	summary := make([]gin.H, 0, len(st.LiveBeads))
	for _, b := range st.LiveBeads {
		if b.Type == reconciler.BeadIssue && b.Status == reconciler.StatusOpen && b.HasLabel(reconciler.LabelTriageRequest) {
			triage++
		}
		if b.Type == reconciler.BeadMessage {
			continue
		}
		summary = append(summary, gin.H{"bead_id": b.ID, "type": b.Type, "status": b.Status, "title": b.Title,
			"assignee": nullable(b.AssigneeID), "rig_id": nullable(b.RigID), "created_by": b.CreatedBy,
			"labels": b.Labels, "metadata": b.Metadata, "updated_at": b.UpdatedAt})
	}
	interval, label := time.Duration(0), "idle"
	var reconcilerMetrics any
	if st.LastTick != nil {
		lt := st.LastTick
		interval = lt.NextTickAt.Sub(lt.StartedAt)
		reconcilerMetrics = gin.H{
			"eventsDrained": lt.EventsDrained, "actionsEmitted": lt.ActionsEmitted, "actionsByType": lt.ActionsByType,
			"actionsSkipped": lt.ActionsSkipped, "sideEffectsAttempted": lt.SideEffectsAttempted,
			"sideEffectsSucceeded": lt.SideEffectsSucceeded, "sideEffectsFailed": lt.SideEffectsFailed,
			"invariantViolations": lt.InvariantViolations, "wallClockMs": float64(lt.WallClockUS) / 1000,
			"pendingEventCount": lt.PendingEventCount, "tickId": lt.ID, "at": lt.StartedAt,
		}
	}
	if st.LastTick != nil && interval >= 0 && interval < time.Minute { // 0: it left events for the next tick at once
		label = "active"
	}
	recent := make([]gin.H, 0, len(st.RecentEvents))
	for _, e := range st.RecentEvents {
		msg := e.Type + " " + e.BeadID
		if e.OldValue != "" || e.NewValue != "" {
			msg += ": " + e.OldValue + " → " + e.NewValue
		}
		recent = append(recent, gin.H{"time": e.Time, "type": e.Type, "message": msg})
	}
	alarm := gin.H{
		"alarm": gin.H{"nextFireAt": st.Town.NextTickAt, "intervalMs": interval.Milliseconds(),
			"intervalLabel": fmt.Sprintf("%s (%s)", label, compactDuration(interval))},
		"agents": agents,
		"beads": gin.H{"open": st.BeadCounts["open"], "inProgress": st.BeadCounts["in_progress"], "inReview": st.BeadCounts["in_review"],
			"failed": st.BeadCounts["failed"], "triageRequests": triage},
		// SPEC.md §8.1 counts open message beads titled GUPP_CHECK / GUPP_ESCALATION; GUPP
		// sends nudges here (agent_nudges), so these count the agents nudged by each tier
		// within the last hour.
		"patrol": gin.H{"guppWarnings": st.RecentNudges[reconciler.NudgeSourceWarn], "guppEscalations": st.RecentNudges[reconciler.NudgeSourceEscalate],
			"stalledAgents": agents["stalled"], "orphanedHooks": orphaned},
		"reconciler":        reconcilerMetrics,
		"recentEvents":      recent,
		"pendingEventCount": st.Pending,
	}
	if st.Town.Draining {
		alarm["draining"] = true
		alarm["drainStartedAt"] = st.Town.DrainStartedAt
	}
	c.JSON(http.StatusOK, gin.H{"alarmStatus": alarm, "agentMeta": agentMeta, "beadSummary": summary})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullableTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// replayCaveat is returned with every reference-style replay (SPEC.md §8.3).
const replayCaveat = "Events are re-applied on top of the CURRENT live state, not a snapshot taken before the window; " +
	"non-idempotent handlers (agent_done, review completion) may act on different beads than they originally did, " +
	"and events older than the retention or of deleted beads are gone. Use this to debug event flow, not to reconstruct history."

type replayRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Mode is "reference" (default: the reference's approximate replay) or "faithful".
	Mode string `json:"mode"`
	// Faithful mode: tick ids instead of from/to times, a config for a what-if replay,
	// stop at the first divergence, and "divergent" to list only the ticks that differ.
	FromTick         int64                  `json:"from_tick"`
	ToTick           int64                  `json:"to_tick"`
	Config           *reconciler.TownConfig `json:"config"`
	StopAtDivergence bool                   `json:"stop_at_divergence"`
	Ticks            string                 `json:"ticks"`
}

// replayEvents re-applies the events of a window on the current state and reconciles, in a
// transaction that is always rolled back (SPEC.md §8.3 reference behaviour, with its caveat).
func (s *Server) replayEvents(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req replayRequest
	if !bindJSON(c, &req) {
		return
	}
	switch req.Mode {
	case "", "reference":
	case "faithful":
		s.replayFaithful(c, townID, req)
		return
	default:
		writeError(c, http.StatusBadRequest, `mode must be "reference" or "faithful", not "`+req.Mode+`"`)
		return
	}
	if req.From == "" || req.To == "" {
		writeError(c, http.StatusBadRequest, "from and to are required (RFC 3339 timestamps)")
		return
	}
	from, err := time.Parse(time.RFC3339Nano, req.From)
	if err != nil {
		writeError(c, http.StatusBadRequest, "from is not an RFC 3339 timestamp: "+req.From)
		return
	}
	to, err := time.Parse(time.RFC3339Nano, req.To)
	if err != nil {
		writeError(c, http.StatusBadRequest, "to is not an RFC 3339 timestamp: "+req.To)
		return
	}
	if from.After(to) {
		writeError(c, http.StatusBadRequest, "from must not be after to")
		return
	}
	tx, err := s.store.BeginWaiting(c, s.cfg.DryRunLockTimeout)
	if err != nil {
		s.fail(c, err)
		return
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(c)) }()
	tt, err := s.store.LockTown(c, tx, townID, s.clock().UTC(), true, s.logger)
	if err != nil {
		s.fail(c, db.BusyOr(err))
		return
	}
	replayed, err := tt.ReplayWindow(c, from, to, 10000)
	if err != nil {
		s.fail(c, db.BusyOr(err))
		return
	}
	snap, err := tt.LoadSnapshot(c)
	if err != nil {
		s.fail(c, err)
		return
	}
	actions, err := reconciler.EncodeActions(reconciler.Reconcile(snap, reconciler.Options{Draining: tt.Draining()}, tt.Now))
	if err != nil {
		s.fail(c, err)
		return
	}
	agents := make([]gin.H, 0, len(snap.Agents))
	for _, a := range snap.Agents {
		agents = append(agents, gin.H{"bead_id": a.ID, "role": a.Role, "status": a.Status, "current_hook_bead_id": nullable(a.HookBeadID),
			"dispatch_attempts": a.DispatchAttempts, "last_activity_at": nullableTime(a.LastActivityAt)})
	}
	beads := make([]gin.H, 0)
	for _, b := range snap.Beads {
		if !b.Status.Terminal() {
			beads = append(beads, gin.H{"bead_id": b.ID, "type": b.Type, "status": b.Status, "title": b.Title,
				"assignee": nullable(b.AssigneeID), "updated_at": b.UpdatedAt})
		}
	}
	c.JSON(http.StatusOK, gin.H{"caveat": replayCaveat, "eventsReplayed": len(replayed), "events": replayed,
		"actions": actions, "stateSnapshot": gin.H{"agents": agents, "nonTerminalBeads": beads}})
}

// replayFaithful restores the latest checkpoint before the window inside a transaction
// it rolls back, re-runs the recorded ticks and compares each with its record (ISSUE 9).
// With "Accept: application/x-ndjson" it streams progress lines ({"progress": {"done",
// "total"}}) and ends with {"report": ...}; a client that goes away cancels the replay.
func (s *Server) replayFaithful(c *gin.Context, townID string, req replayRequest) {
	opts := jobs.ReplayOptions{From: req.FromTick, To: req.ToTick, Config: req.Config,
		StopAtDivergence: req.StopAtDivergence, LockTimeout: s.cfg.DryRunLockTimeout}
	if req.FromTick < 0 || req.ToTick < 0 || (req.ToTick > 0 && req.FromTick > req.ToTick) {
		writeError(c, http.StatusBadRequest, "from_tick and to_tick must be tick ids, from_tick not after to_tick")
		return
	}
	if req.Ticks != "" && req.Ticks != "all" && req.Ticks != "divergent" {
		writeError(c, http.StatusBadRequest, `ticks must be "all" or "divergent"`)
		return
	}
	if req.Config != nil {
		if err := req.Config.Validate(); err != nil {
			writeError(c, http.StatusBadRequest, "config: "+err.Error())
			return
		}
	}
	if req.From != "" || req.To != "" {
		from, to, ok := replayTimes(c, req)
		if !ok {
			return
		}
		first, last, err := s.store.TickRange(c, townID, from, to)
		if err != nil {
			s.fail(c, err)
			return
		}
		if first == 0 {
			writeError(c, http.StatusNotFound, "no recorded tick of this town between from and to")
			return
		}
		opts.From, opts.To = first, last
	}
	stream := strings.Contains(c.GetHeader("Accept"), "application/x-ndjson")
	if stream {
		c.Header("Content-Type", "application/x-ndjson")
		c.Status(http.StatusOK)
		var lastSent time.Time
		opts.Progress = func(done, total int) {
			if done < total && time.Since(lastSent) < 200*time.Millisecond {
				return
			}
			lastSent = time.Now()
			_ = json.NewEncoder(c.Writer).Encode(gin.H{"progress": gin.H{"done": done, "total": total}})
			c.Writer.Flush()
		}
	}
	rep, err := s.svc.Replay(c.Request.Context(), townID, opts)
	if err != nil {
		if stream {
			status, msg := errorStatus(db.BusyOr(err))
			if errors.Is(err, jobs.ErrNoHistory) {
				msg = err.Error()
			}
			_ = json.NewEncoder(c.Writer).Encode(gin.H{"error": msg, "status": status})
			return
		}
		if errors.Is(err, jobs.ErrNoHistory) {
			writeError(c, http.StatusNotFound, err.Error())
			return
		}
		s.fail(c, db.BusyOr(err))
		return
	}
	if req.Ticks == "divergent" {
		kept := rep.Ticks[:0]
		for _, tr := range rep.Ticks {
			if !tr.Reproduced() {
				kept = append(kept, tr)
			}
		}
		rep.Ticks = kept
	}
	if stream {
		_ = json.NewEncoder(c.Writer).Encode(gin.H{"report": rep})
		return
	}
	c.JSON(http.StatusOK, rep)
}

// replayTimes parses the optional from/to times of a faithful replay (open ends allowed).
func replayTimes(c *gin.Context, req replayRequest) (from, to time.Time, ok bool) {
	var err error
	if req.From != "" {
		if from, err = time.Parse(time.RFC3339Nano, req.From); err != nil {
			writeError(c, http.StatusBadRequest, "from is not an RFC 3339 timestamp: "+req.From)
			return from, to, false
		}
	}
	to = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	if req.To != "" {
		if to, err = time.Parse(time.RFC3339Nano, req.To); err != nil {
			writeError(c, http.StatusBadRequest, "to is not an RFC 3339 timestamp: "+req.To)
			return from, to, false
		}
	}
	if from.After(to) {
		writeError(c, http.StatusBadRequest, "from must not be after to")
		return from, to, false
	}
	return from, to, true
}

// takeCheckpoint takes a checkpoint of a town now (at a tick boundary).
func (s *Server) takeCheckpoint(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c, s.cfg.DryRunLockTimeout+5*time.Second)
	defer cancel()
	cp, err := s.store.CheckpointNow(ctx, townID, s.clock().UTC())
	if err != nil {
		s.fail(c, db.BusyOr(err))
		return
	}
	c.JSON(http.StatusCreated, cp)
}

// listCheckpoints lists a town's checkpoints.
func (s *Server) listCheckpoints(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	if _, err := s.store.GetTown(c, townID); err != nil {
		s.fail(c, err)
		return
	}
	cps, err := s.store.ListCheckpoints(c, townID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"checkpoints": cps})
}

// compactDuration writes a cadence as SPEC.md §8.1 does: "5s", "5m", "1h30m", not Go's
// "5m0s".
func compactDuration(d time.Duration) string {
	out := d.Round(time.Second).String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}
