package web

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"gastown/db"
	"gastown/reconciler"
)

// accepted appends one event and answers 202 with its id and extra fields. With ?wait=
// (a duration, at most MaxWait) it first waits for the tick that applies the event and
// says whether it did ("state": processed or dead), else "state": pending.
func (s *Server) accepted(c *gin.Context, townID string, ev db.NewEvent, extra gin.H) {
	var wait time.Duration
	if w := c.Query("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 {
			writeError(c, http.StatusBadRequest, "wait must be a duration such as 2s")
			return
		}
		wait = min(d, s.cfg.MaxWait)
	}
	evs, err := s.svc.Events.Append(c, townID, ev)
	if err != nil {
		s.fail(c, err)
		return
	}
	if extra == nil {
		extra = gin.H{}
	}
	extra["event_id"] = evs[0].ID
	if wait > 0 {
		state, err := s.waitApplied(c, townID, evs[0].ID, wait)
		if err != nil {
			s.fail(c, err)
			return
		}
		extra["state"] = state
	}
	c.JSON(http.StatusAccepted, extra)
}

// waitApplied polls an event until a tick took it or the wait ends.
func (s *Server) waitApplied(c *gin.Context, townID, eventID string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		ev, err := s.store.GetEvent(c, townID, eventID)
		if err != nil {
			return "", err
		}
		if ev.State != "pending" || time.Now().After(deadline) {
			return ev.State, nil
		}
		select {
		case <-c.Request.Context().Done():
			return ev.State, nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

type configRequest struct {
	Config *reconciler.TownConfig `json:"config"`
}

func (s *Server) updateTownConfig(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req configRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Config == nil {
		writeError(c, http.StatusBadRequest, "config is required")
		return
	}
	if err := req.Config.Validate(); err != nil {
		writeError(c, http.StatusBadRequest, "config: "+err.Error())
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventTownConfigUpdated, Payload: reconciler.TownConfigPayload{Config: *req.Config}}, nil)
}

// updateRigRequest is a partial change of a rig: what it leaves out (or sends empty) keeps
// its value; a config replaces the rig's whole configuration.
type updateRigRequest struct {
	Name          string                `json:"name"`
	GitURL        string                `json:"git_url"`
	DefaultBranch string                `json:"default_branch"`
	Config        *reconciler.RigConfig `json:"config"`
}

func (s *Server) updateRig(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	rigID, ok := idParam(c, "rigId")
	if !ok {
		return
	}
	var req updateRigRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Config != nil {
		if err := req.Config.Validate(); err != nil {
			writeError(c, http.StatusBadRequest, "config: "+err.Error())
			return
		}
	}
	if _, err := s.store.GetRig(c, townID, rigID); err != nil {
		s.fail(c, err)
		return
	}
	if req.Name != "" && strings.TrimSpace(req.Name) == "" {
		writeError(c, http.StatusBadRequest, "name must not be blank")
		return
	}
	if req.Name != "" && !s.rigNameFree(c, townID, rigID, req.Name) {
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventRigUpdated, Payload: reconciler.RigUpdatedPayload{
		RigID: rigID, Name: req.Name, GitURL: req.GitURL, DefaultBranch: req.DefaultBranch, Config: req.Config,
	}}, nil)
}

type beadStatusRequest struct {
	Status reconciler.BeadStatus `json:"status"`
}

// updateBeadStatus records a status change asked by a user: a terminal status cancels the
// bead (and stops its agent), another status moves it.
func (s *Server) updateBeadStatus(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	beadID, ok := idParam(c, "beadId")
	if !ok {
		return
	}
	var req beadStatusRequest
	if !bindJSON(c, &req) {
		return
	}
	if !req.Status.Valid() {
		writeError(c, http.StatusBadRequest, "status must be open, in_progress, in_review, closed or failed")
		return
	}
	b, err := s.store.GetBead(c, townID, beadID)
	if err != nil {
		s.fail(c, err)
		return
	}
	if b.Status.Terminal() {
		writeError(c, http.StatusConflict, "bead is "+string(b.Status)+"; closed and failed beads do not change")
		return
	}
	ev := db.NewEvent{Type: reconciler.EventBeadStatusChanged, BeadID: beadID, Payload: reconciler.BeadStatusChangedPayload{Status: req.Status, Actor: "api"}}
	if req.Status.Terminal() {
		ev = db.NewEvent{Type: reconciler.EventBeadCancelled, BeadID: beadID, Payload: reconciler.BeadCancelledPayload{CancelStatus: req.Status}}
	}
	s.accepted(c, townID, ev, nil)
}

type convoyTaskRequest struct {
	Title string `json:"title"`
	Body  string `json:"body"`
	RigID string `json:"rig_id"`
	// BlockedBy lists indices of earlier tasks this one waits for.
	BlockedBy []int `json:"blocked_by"`
}

type convoyRequest struct {
	Title     string              `json:"title"`
	MergeMode string              `json:"merge_mode"`
	Staged    *bool               `json:"staged"`
	Tasks     []convoyTaskRequest `json:"tasks"`
}

func (s *Server) createConvoy(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req convoyRequest
	if !bindJSON(c, &req) {
		return
	}
	switch {
	case strings.TrimSpace(req.Title) == "":
		writeError(c, http.StatusBadRequest, "title is required")
		return
	case len(req.Tasks) == 0:
		writeError(c, http.StatusBadRequest, "tasks must list at least one task")
		return
	case req.MergeMode != "" && req.MergeMode != reconciler.MergeModeThenLand && req.MergeMode != reconciler.MergeModeAndMerge:
		writeError(c, http.StatusBadRequest, "merge_mode must be review-then-land or review-and-merge")
		return
	}
	town, err := s.store.GetTown(c, townID)
	if err != nil {
		s.fail(c, err)
		return
	}
	staged := town.Config.StagedConvoysDefault != nil && *town.Config.StagedConvoysDefault
	if req.Staged != nil {
		staged = *req.Staged
	}
	rigs := map[string]reconciler.Rig{}
	tasks := make([]reconciler.ConvoyTask, len(req.Tasks))
	for i, tr := range req.Tasks {
		field := "tasks[" + strconv.Itoa(i) + "]"
		if strings.TrimSpace(tr.Title) == "" {
			writeError(c, http.StatusBadRequest, field+".title is required")
			return
		}
		if !db.IsID(tr.RigID) {
			writeError(c, http.StatusBadRequest, field+".rig_id must be a UUID")
			return
		}
		tr.RigID = strings.ToLower(tr.RigID)
		if _, seen := rigs[tr.RigID]; !seen {
			rig, err := s.store.GetRig(c, townID, tr.RigID)
			if err != nil {
				if errors.Is(err, db.ErrNotFound) {
					writeError(c, http.StatusNotFound, field+".rig_id: rig not found in this town"+notYet)
					return
				}
				s.fail(c, err)
				return
			}
			rigs[tr.RigID] = rig
		}
		tasks[i] = reconciler.ConvoyTask{BeadID: db.NewID(), Title: tr.Title, Body: tr.Body, RigID: tr.RigID}
		for _, j := range tr.BlockedBy {
			if j < 0 || j >= i {
				writeError(c, http.StatusBadRequest, field+".blocked_by must name earlier tasks by index")
				return
			}
			tasks[i].BlockedBy = append(tasks[i].BlockedBy, tasks[j].BeadID)
		}
	}
	// No merge mode asked: the configuration's (SPEC.md §2.11: the rig's override when
	// every task is in one rig, else the town's), recorded with the convoy; the default
	// (review-then-land) applies when neither sets one.
	if req.MergeMode == "" {
		req.MergeMode = town.Config.ConvoyMergeMode
		if len(rigs) == 1 {
			for _, rig := range rigs {
				req.MergeMode = cmp.Or(rig.Config.ConvoyMergeMode, req.MergeMode)
			}
		}
	}
	convoyID := db.NewID()
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.BeadID
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventConvoyCreated, BeadID: convoyID, Payload: reconciler.ConvoyCreatedPayload{
		Title: req.Title, MergeMode: req.MergeMode, Staged: staged, Tasks: tasks,
	}}, gin.H{"convoy_id": convoyID, "task_ids": ids, "staged": staged, "merge_mode": cmp.Or(req.MergeMode, reconciler.MergeModeThenLand)})
}

func (s *Server) startConvoy(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	convoyID, ok := s.beadOfType(c, townID, "convoyId", reconciler.BeadConvoy)
	if !ok {
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventConvoyStarted, BeadID: convoyID, Payload: reconciler.ConvoyStartedPayload{ConvoyID: convoyID}}, nil)
}

// containerEviction records that the town's container is being evicted: the town drains
// until the container acknowledges the returned nonce, a new container heartbeats, or 7
// minutes pass.
func (s *Server) containerEviction(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventContainerEviction, Payload: reconciler.ContainerEvictionPayload{Nonce: nonce}}, gin.H{"nonce": nonce})
}

func (s *Server) containerReady(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req reconciler.ContainerReadyPayload
	if !bindJSON(c, &req) {
		return
	}
	if req.Nonce == "" {
		writeError(c, http.StatusBadRequest, "nonce is required")
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventContainerReady, Payload: req}, nil)
}

func (s *Server) acknowledgeEscalation(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	beadID, ok := s.beadOfType(c, townID, "beadId", reconciler.BeadEscalation)
	if !ok {
		return
	}
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventEscalationAcknowledged, BeadID: beadID, Payload: reconciler.EscalationAcknowledgedPayload{By: "api"}}, nil)
}

type mailRequest struct {
	ToAgentID string `json:"to_agent_id"`
	Subject   string `json:"subject"`
	Body      string `json:"body"`
}

// sendMail addresses a message bead to an agent; housekeeping delivers it while the agent
// works.
func (s *Server) sendMail(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req mailRequest
	if !bindJSON(c, &req) {
		return
	}
	if !db.IsID(req.ToAgentID) || strings.TrimSpace(req.Subject) == "" {
		writeError(c, http.StatusBadRequest, "to_agent_id (a UUID) and subject are required")
		return
	}
	req.ToAgentID = strings.ToLower(req.ToAgentID) // the mail's assignee is compared as text
	if _, err := s.store.GetAgent(c, townID, req.ToAgentID); err != nil {
		s.fail(c, err)
		return
	}
	beadID := db.NewID()
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: beadID, Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadMessage, Title: req.Subject, Body: req.Body, AssigneeID: req.ToAgentID,
		Labels: []string{reconciler.LabelMessage, "from:api"}, CreatedBy: "api",
	}}, gin.H{"bead_id": beadID})
}

// beadOfType reads the bead named by a path parameter and checks its type, answering 400
// (not a UUID, wrong type) or 404 itself.
func (s *Server) beadOfType(c *gin.Context, townID, param string, typ reconciler.BeadType) (string, bool) {
	beadID, ok := idParam(c, param)
	if !ok {
		return "", false
	}
	b, err := s.store.GetBead(c, townID, beadID)
	if err != nil {
		s.fail(c, err)
		return "", false
	}
	if b.Type != typ {
		writeError(c, http.StatusBadRequest, "bead "+beadID+" has type "+string(b.Type)+", not "+string(typ))
		return "", false
	}
	return beadID, true
}
