package web

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"gastown/db"
	"gastown/reconciler"
)

// agentIDs reads the town and agent of an agent callback and checks the agent exists in
// that town, so an agent cannot report into another town.
func (s *Server) agentIDs(c *gin.Context) (townID, agentID string, ok bool) {
	if townID, ok = idParam(c, "townId"); !ok {
		return "", "", false
	}
	if agentID, ok = idParam(c, "agentId"); !ok {
		return "", "", false
	}
	if _, err := s.store.GetAgent(c, townID, agentID); err != nil {
		if errors.Is(err, db.ErrNotFound) {
			writeError(c, http.StatusNotFound, "agent "+agentID+" not found in town "+townID)
			return "", "", false
		}
		s.fail(c, err)
		return "", "", false
	}
	return townID, agentID, true
}

type heartbeatRequest struct {
	LastEventType       string    `json:"last_event_type"`
	LastEventAt         time.Time `json:"last_event_at"`
	ActiveTools         []string  `json:"active_tools"`
	ContainerInstanceID string    `json:"container_instance_id"`
}

func (s *Server) agentHeartbeat(c *gin.Context) {
	townID, agentID, ok := s.agentIDs(c)
	if !ok {
		return
	}
	var req heartbeatRequest
	if !bindAgentJSON(c, &req, true) {
		return
	}
	if err := s.store.RecordHeartbeat(c, townID, agentID, db.Heartbeat{
		LastEventType: req.LastEventType, LastEventAt: req.LastEventAt, ActiveTools: req.ActiveTools,
		ContainerInstanceID: req.ContainerInstanceID,
	}); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusAccepted, gin.H{"ok": true})
}

func (s *Server) agentDone(c *gin.Context) {
	townID, agentID, ok := s.agentIDs(c)
	if !ok {
		return
	}
	var req reconciler.AgentDonePayload
	if !bindAgentJSON(c, &req, false) {
		return
	}
	if strings.TrimSpace(req.Branch) == "" {
		writeError(c, http.StatusBadRequest, "branch is required")
		return
	}
	if req.PRURL != "" && !strings.HasPrefix(req.PRURL, "https://") {
		writeError(c, http.StatusBadRequest, "pr_url must be an https:// URL")
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventAgentDone, AgentID: agentID, Payload: req}, nil)
}

func (s *Server) agentCompleted(c *gin.Context) {
	townID, agentID, ok := s.agentIDs(c)
	if !ok {
		return
	}
	var req reconciler.AgentCompletedPayload
	if !bindAgentJSON(c, &req, false) {
		return
	}
	if req.Status != "completed" && req.Status != "failed" {
		writeError(c, http.StatusBadRequest, "status must be completed or failed")
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventAgentCompleted, AgentID: agentID, Payload: req}, nil)
}

// checkMail hands an agent its open mail and records the delivery (the next tick closes the
// message beads).
func (s *Server) checkMail(c *gin.Context) {
	townID, agentID, ok := s.agentIDs(c)
	if !ok {
		return
	}
	mail, err := s.store.OpenMailFor(c, townID, agentID)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := make([]gin.H, 0, len(mail))
	evs := make([]db.NewEvent, 0, len(mail))
	for _, m := range mail {
		out = append(out, gin.H{"bead_id": m.ID, "subject": m.Title, "body": m.Body, "from": m.CreatedBy, "created_at": m.CreatedAt})
		evs = append(evs, db.NewEvent{Type: reconciler.EventMailDelivered, AgentID: agentID,
			Payload: reconciler.DeliveryPayload{BeadID: m.ID}, IdempotencyKey: "mail-delivered:" + m.ID})
	}
	if len(evs) > 0 {
		if _, err := s.svc.Events.Append(c, townID, evs...); err != nil {
			s.fail(c, err)
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"mail": out})
}

// pendingNudges hands an agent its pending nudges (urgent first) and records them as
// delivered.
func (s *Server) pendingNudges(c *gin.Context) {
	townID, agentID, ok := s.agentIDs(c)
	if !ok {
		return
	}
	nudges, err := s.store.PendingNudges(c, townID, agentID, s.clock())
	if err != nil {
		s.fail(c, err)
		return
	}
	evs := make([]db.NewEvent, 0, len(nudges))
	for _, n := range nudges {
		evs = append(evs, db.NewEvent{Type: reconciler.EventNudgeDelivered, AgentID: agentID,
			Payload: reconciler.DeliveryPayload{NudgeID: n.ID}, IdempotencyKey: "nudge-delivered:" + n.ID})
	}
	if len(evs) > 0 {
		if _, err := s.svc.Events.Append(c, townID, evs...); err != nil {
			s.fail(c, err)
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"nudges": nudges})
}
