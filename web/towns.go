package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"gastown/db"
	"gastown/reconciler"
)

// idParam reads a UUID path parameter, answering 400 when it is not one.
func idParam(c *gin.Context, name string) (string, bool) {
	v := c.Param(name)
	if !db.IsID(v) {
		writeError(c, http.StatusBadRequest, name+" must be a UUID")
		return "", false
	}
	return strings.ToLower(v), true
}

// hasNULEscape reports whether a JSON text holds the escape \u0000: a backslash that is not
// itself escaped (`\\u0000` is a backslash and the text "u0000").
func hasNULEscape(raw []byte) bool {
	escape := []byte(`\u0000`)
	for i := 0; ; {
		j := bytes.Index(raw[i:], escape)
		if j < 0 {
			return false
		}
		j += i
		backslashes := 0
		for k := j; k >= 0 && raw[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 1 {
			return true
		}
		i = j + 1
	}
}

// bindJSON decodes the body of an admin request, answering 400 with the decoder's
// complaint; a field the request does not have is one (a typo would otherwise change
// nothing, silently).
func bindJSON(c *gin.Context, v any) bool { return decodeBody(c, v, false, true) }

// bindAgentJSON decodes an agent's callback body, which may be empty (optional) and may
// carry fields this version does not know: agents are deployed apart from gastown.
func bindAgentJSON(c *gin.Context, v any, optional bool) bool {
	return decodeBody(c, v, optional, false)
}

func decodeBody(c *gin.Context, v any, optional, strict bool) bool {
	raw, err := io.ReadAll(c.Request.Body)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(c, http.StatusRequestEntityTooLarge, "request body is larger than "+strconv.FormatInt(tooBig.Limit, 10)+" bytes")
		return false
	}
	if err != nil {
		writeError(c, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return false
	}
	// Postgres stores neither text nor jsonb with a NUL character in it.
	if hasNULEscape(raw) || bytes.IndexByte(raw, 0) >= 0 {
		writeError(c, http.StatusBadRequest, `invalid JSON body: strings must not contain the NUL character (\u0000)`)
		return false
	}
	if optional && len(bytes.TrimSpace(raw)) == 0 {
		return true
	}
	// One JSON value and nothing after it.
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		writeError(c, http.StatusBadRequest, "invalid JSON body: "+strings.TrimPrefix(err.Error(), "json: "))
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(c, http.StatusBadRequest, "invalid JSON body: more than one JSON value")
		return false
	}
	return true
}

// notYet ends a 404 for something a request names: it may be created but not applied.
const notYet = " (one just created exists after the town's next tick: create it with ?wait=2s)"

// townParam reads the town of the path and answers 404 when there is no such town.
func (s *Server) townParam(c *gin.Context) (string, bool) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return "", false
	}
	if _, err := s.store.GetTown(c, townID); err != nil {
		s.fail(c, err)
		return "", false
	}
	return townID, true
}

func limitParam(c *gin.Context, def, maxLimit int) (int, bool) {
	s := c.Query("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		writeError(c, http.StatusBadRequest, "limit must be an integer from 1 to "+strconv.Itoa(maxLimit))
		return 0, false
	}
	return n, true
}

type createTownRequest struct {
	Name   string                `json:"name"`
	Config reconciler.TownConfig `json:"config"`
}

func (s *Server) createTown(c *gin.Context) {
	var req createTownRequest
	if !bindJSON(c, &req) {
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		writeError(c, http.StatusBadRequest, "name is required")
		return
	}
	if err := req.Config.Validate(); err != nil {
		writeError(c, http.StatusBadRequest, "config: "+err.Error())
		return
	}
	t, err := s.store.CreateTown(c, db.NewID(), req.Name, reconciler.SeedTownConfig(req.Config), s.clock())
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.svc.Wake(c, t.ID); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, t)
}

func (s *Server) listTowns(c *gin.Context) {
	limit, ok := limitParam(c, 100, 1000)
	if !ok {
		return
	}
	towns, err := s.store.ListTowns(c, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"towns": towns})
}

func (s *Server) getTown(c *gin.Context) {
	id, ok := idParam(c, "townId")
	if !ok {
		return
	}
	t, err := s.store.GetTown(c, id)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, t)
}

func (s *Server) deleteTown(c *gin.Context) {
	id, ok := idParam(c, "townId")
	if !ok {
		return
	}
	if err := s.store.DeleteTown(c, id); err != nil {
		s.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

type createRigRequest struct {
	Name          string               `json:"name"`
	GitURL        string               `json:"git_url"`
	DefaultBranch string               `json:"default_branch"`
	Config        reconciler.RigConfig `json:"config"`
}

// createRig records the user's intent as a rig_created event (202): the rig exists after
// the town's next tick.
func (s *Server) createRig(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req createRigRequest
	if !bindJSON(c, &req) {
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		writeError(c, http.StatusBadRequest, "name is required")
		return
	}
	if err := req.Config.Validate(); err != nil {
		writeError(c, http.StatusBadRequest, "config: "+err.Error())
		return
	}
	if !s.rigNameFree(c, townID, "", req.Name) {
		return
	}
	rigID := db.NewID()
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventRigCreated, Payload: reconciler.RigCreatedPayload{
		RigID: rigID, Name: req.Name, GitURL: req.GitURL, DefaultBranch: req.DefaultBranch, Config: req.Config,
	}}, gin.H{"rig_id": rigID})
}

// maxRigName bounds a rig's name: names are unique in a town, through an index whose
// entries Postgres caps at ~2.7 kB.
const maxRigName = 200

// rigNameFree answers 400 for a name over maxRigName characters and 409 when another rig
// of the town (not rigID) has the name; a tick could not apply either.
func (s *Server) rigNameFree(c *gin.Context, townID, rigID, name string) bool {
	if utf8.RuneCountInString(name) > maxRigName {
		writeError(c, http.StatusBadRequest, "name is longer than "+strconv.Itoa(maxRigName)+" characters")
		return false
	}
	rigs, err := s.store.ListRigs(c, townID)
	if err != nil {
		s.fail(c, err)
		return false
	}
	for _, r := range rigs {
		if r.Name == name && r.ID != rigID {
			writeError(c, http.StatusConflict, "the town has a rig named "+strconv.Quote(name)+" already ("+r.ID+")")
			return false
		}
	}
	return true
}

func (s *Server) listRigs(c *gin.Context) {
	townID, ok := s.townParam(c)
	if !ok {
		return
	}
	rigs, err := s.store.ListRigs(c, townID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"rigs": rigs})
}

type createBeadRequest struct {
	Type      reconciler.BeadType `json:"type"`
	Title     string              `json:"title"`
	Body      string              `json:"body"`
	RigID     string              `json:"rig_id"`
	Priority  reconciler.Priority `json:"priority"`
	Labels    []string            `json:"labels"`
	Metadata  map[string]any      `json:"metadata"`
	BlockedBy []string            `json:"blocked_by"`
}

// createBead slings a bead: a bead_created event (202) the next tick applies.
func (s *Server) createBead(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	var req createBeadRequest
	if !bindJSON(c, &req) {
		return
	}
	if req.Type == "" {
		req.Type = reconciler.BeadIssue
	}
	if req.Priority == "" {
		req.Priority = reconciler.PriorityMedium
	}
	switch {
	case strings.TrimSpace(req.Title) == "":
		writeError(c, http.StatusBadRequest, "title is required")
		return
	case req.Type != reconciler.BeadIssue && req.Type != reconciler.BeadMessage && req.Type != reconciler.BeadMolecule:
		writeError(c, http.StatusBadRequest, "type must be issue, message or molecule")
		return
	case !req.Priority.Valid():
		writeError(c, http.StatusBadRequest, "priority must be low, medium, high or critical")
		return
	case req.RigID != "" && !db.IsID(req.RigID):
		writeError(c, http.StatusBadRequest, "rig_id must be a UUID")
		return
	}
	req.RigID = strings.ToLower(req.RigID)
	// Each blocker must be a bead of this town: a tick cannot apply a bead whose blocker
	// does not exist, and another town's bead is not this town's to name.
	var blockers []string
	for _, b := range req.BlockedBy {
		if !db.IsID(b) {
			writeError(c, http.StatusBadRequest, "blocked_by must list bead UUIDs")
			return
		}
		if b = strings.ToLower(b); slices.Contains(blockers, b) {
			continue
		}
		if _, err := s.store.GetBead(c, townID, b); err != nil {
			if errors.Is(err, db.ErrNotFound) {
				writeError(c, http.StatusNotFound, "blocked_by: bead "+b+" not found in this town"+notYet)
				return
			}
			s.fail(c, err)
			return
		}
		blockers = append(blockers, b)
	}
	req.BlockedBy = blockers
	if req.RigID != "" {
		if _, err := s.store.GetRig(c, townID, req.RigID); err != nil {
			if errors.Is(err, db.ErrNotFound) {
				writeError(c, http.StatusNotFound, "rig "+req.RigID+" not found in this town"+notYet)
				return
			}
			s.fail(c, err)
			return
		}
	}
	beadID := db.NewID()
	s.accepted(c, townID, db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: beadID,
		Payload: reconciler.BeadCreatedPayload{
			Type: req.Type, Title: req.Title, Body: req.Body, RigID: req.RigID, Priority: req.Priority,
			Labels: req.Labels, Metadata: req.Metadata, CreatedBy: "api", BlockedBy: req.BlockedBy,
		}}, gin.H{"bead_id": beadID})
}

func (s *Server) listBeads(c *gin.Context) {
	townID, ok := s.townParam(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 100, 1000)
	if !ok {
		return
	}
	f := db.BeadFilter{Type: reconciler.BeadType(c.Query("type")), Status: reconciler.BeadStatus(c.Query("status")),
		RigID: strings.ToLower(c.Query("rig_id")), Limit: limit}
	switch {
	case f.Type != "" && !f.Type.Valid():
		writeError(c, http.StatusBadRequest, "unknown bead type "+strconv.Quote(string(f.Type)))
		return
	case f.Status != "" && !f.Status.Valid():
		writeError(c, http.StatusBadRequest, "unknown bead status "+strconv.Quote(string(f.Status)))
		return
	case f.RigID != "" && !db.IsID(f.RigID):
		writeError(c, http.StatusBadRequest, "rig_id must be a UUID")
		return
	}
	beads, err := s.store.ListBeads(c, townID, f)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"beads": beads})
}

func (s *Server) getBead(c *gin.Context) {
	townID, ok := idParam(c, "townId")
	if !ok {
		return
	}
	beadID, ok := idParam(c, "beadId")
	if !ok {
		return
	}
	d, err := s.store.GetBeadDetail(c, townID, beadID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, d)
}

func (s *Server) listAgents(c *gin.Context) {
	townID, ok := s.townParam(c)
	if !ok {
		return
	}
	agents, err := s.store.ListAgents(c, townID)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"agents": agents})
}

func (s *Server) listEvents(c *gin.Context) {
	townID, ok := s.townParam(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 100, 1000)
	if !ok {
		return
	}
	state := c.Query("state")
	if state != "" && state != "pending" && state != "processed" && state != "dead" {
		writeError(c, http.StatusBadRequest, "state must be pending, processed or dead")
		return
	}
	evs, err := s.store.ListEvents(c, townID, state, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"events": evs})
}

func (s *Server) listTicks(c *gin.Context) {
	townID, ok := s.townParam(c)
	if !ok {
		return
	}
	limit, ok := limitParam(c, 50, 1000)
	if !ok {
		return
	}
	ticks, err := s.store.ListTicks(c, townID, limit)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"ticks": ticks})
}
