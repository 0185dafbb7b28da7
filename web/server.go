// Package web is gastown's HTTP API on Gin: the authenticated admin API, the agent
// callbacks, and the debug endpoints (status, reconcile dry-run).
package web

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"riverqueue.com/riverui"

	"gastown/agenttoken"
	"gastown/db"
	"gastown/jobs"
)

// Config configures the API.
type Config struct {
	// AdminTokens are the bearer tokens accepted by the admin API; several may be valid at
	// once so a token can be rotated. At least one is required.
	AdminTokens []string
	// DryRunLockTimeout bounds how long a dry-run waits for a town's lock (default 2 s).
	DryRunLockTimeout time.Duration
	// AgentTokens verifies the per-agent tokens of the agent callbacks. Required.
	AgentTokens *agenttoken.Signer
	// MaxBodyBytes bounds a request body (default 1 MiB).
	MaxBodyBytes int64
	// MaxWait bounds ?wait= on writes (default 30 s).
	MaxWait time.Duration
	// Reporter hears about recovered panics (may be nil).
	Reporter PanicReporter
	// Metrics serves Prometheus metrics at /metrics, behind the admin authentication
	// (nil: no route).
	Metrics http.Handler
}

// PanicReporter hears about a handler's panic.
type PanicReporter interface {
	Panicked(method, path string, value any)
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	store   *db.Store
	svc     *jobs.Service
	logger  *slog.Logger
	clock   func() time.Time
	riverUI *riverui.Handler
}

// openAPI is the OpenAPI 3 document of every route (a test keeps it true).
//
//go:embed openapi.json
var openAPI []byte

// RiverUIPrefix is where River's UI is mounted, behind the admin authentication.
const RiverUIPrefix = "/riverui"

// New builds the API.
func New(cfg Config, store *db.Store, svc *jobs.Service, logger *slog.Logger) (*Server, error) {
	if len(cfg.AdminTokens) == 0 {
		return nil, errors.New("the admin API needs at least one token (ADMIN_TOKEN)")
	}
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.AgentTokens == nil {
		return nil, errors.New("the agent API needs an agent token signer (GASTOWN_AGENT_TOKEN_SECRET)")
	}
	if cfg.DryRunLockTimeout <= 0 {
		cfg.DryRunLockTimeout = 2 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 30 * time.Second
	}
	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(svc.Client, nil),
		Logger:    logger.With("component", "riverui"),
		Prefix:    RiverUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("river UI: %w", err)
	}
	return &Server{cfg: cfg, store: store, svc: svc, logger: logger, clock: time.Now, riverUI: ui}, nil
}

// Start starts the background services of the River UI; they stop with ctx.
func (s *Server) Start(ctx context.Context) error { return s.riverUI.Start(ctx) }

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.CustomRecovery(func(c *gin.Context, v any) {
		s.logger.Error("handler panicked", "method", c.Request.Method, "path", c.FullPath(), "panic", v)
		if s.cfg.Reporter != nil {
			s.cfg.Reporter.Panicked(c.Request.Method, c.FullPath(), v)
		}
		writeError(c, http.StatusInternalServerError, "internal error")
	}))
	r.Use(func(c *gin.Context) {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
		c.Next()
	})
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { writeError(c, http.StatusNotFound, "no such route") })
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	r.GET("/openapi.json", func(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPI) })

	admin := r.Group("/", s.requireAdmin)
	v1 := admin.Group("/v1")
	v1.POST("/towns", s.createTown)
	v1.GET("/towns", s.listTowns)
	v1.GET("/towns/:townId", s.getTown)
	v1.DELETE("/towns/:townId", s.deleteTown)
	v1.POST("/towns/:townId/rigs", s.createRig)
	v1.GET("/towns/:townId/rigs", s.listRigs)
	v1.POST("/towns/:townId/beads", s.createBead)
	v1.GET("/towns/:townId/beads", s.listBeads)
	v1.GET("/towns/:townId/beads/:beadId", s.getBead)
	v1.GET("/towns/:townId/agents", s.listAgents)
	v1.GET("/towns/:townId/events", s.listEvents)
	v1.GET("/towns/:townId/ticks", s.listTicks)
	v1.PATCH("/towns/:townId/config", s.updateTownConfig)
	v1.PATCH("/towns/:townId/rigs/:rigId", s.updateRig)
	v1.PATCH("/towns/:townId/beads/:beadId", s.updateBeadStatus)
	v1.POST("/towns/:townId/convoys", s.createConvoy)
	v1.POST("/towns/:townId/convoys/:convoyId/start", s.startConvoy)
	v1.POST("/towns/:townId/escalations/:beadId/acknowledge", s.acknowledgeEscalation)
	v1.POST("/towns/:townId/mail", s.sendMail)
	v1.POST("/towns/:townId/container-eviction", s.containerEviction)
	v1.POST("/towns/:townId/container-ready", s.containerReady)

	// Agent callbacks take the agent's own token, not an admin token.
	agent := r.Group("/v1/agent/towns/:townId/agents/:agentId", s.requireAgent)
	agent.POST("/heartbeat", s.agentHeartbeat)
	agent.POST("/done", s.agentDone)
	agent.POST("/completed", s.agentCompleted)
	agent.POST("/mail/check", s.checkMail)
	agent.GET("/nudges", s.pendingNudges)

	admin.GET("/dashboard", s.dashboardPage)
	if s.cfg.Metrics != nil {
		admin.GET("/metrics", gin.WrapH(s.cfg.Metrics))
	}
	ui := gin.WrapH(s.riverUI)
	admin.Any(RiverUIPrefix, ui)
	admin.Any(RiverUIPrefix+"/*path", ui)

	debug := admin.Group("/debug")
	debug.GET("/towns/:townId/status", s.townStatus)
	debug.POST("/towns/:townId/reconcile-dry-run", s.reconcileDryRun)
	debug.POST("/towns/:townId/replay-events", s.replayEvents)
	debug.POST("/towns/:townId/checkpoints", s.takeCheckpoint)
	debug.GET("/towns/:townId/checkpoints", s.listCheckpoints)
	return r
}

// requireAdmin accepts a request bearing one of the admin tokens (constant-time), as a
// bearer token or as the password of HTTP basic auth (so a browser can open the River UI).
func (s *Server) requireAdmin(c *gin.Context) {
	token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok {
		_, token, ok = c.Request.BasicAuth()
	}
	deny := func(problem string) {
		// The pages a browser opens (River UI, dashboard) ask it for the token as a
		// password, again after a wrong one.
		if path := c.Request.URL.Path; strings.HasPrefix(path, RiverUIPrefix) || path == "/dashboard" {
			c.Header("WWW-Authenticate", `Basic realm="gastown admin (password: ADMIN_TOKEN)"`)
		}
		writeError(c, http.StatusUnauthorized, problem)
	}
	if !ok || token == "" {
		deny("missing bearer token (Authorization: Bearer <ADMIN_TOKEN>)")
		return
	}
	valid := 0
	for _, t := range s.cfg.AdminTokens {
		valid |= subtle.ConstantTimeCompare([]byte(token), []byte(t))
	}
	if valid != 1 {
		deny("invalid token")
		return
	}
	c.Next()
}

// requireAgent accepts a request bearing the agent token of exactly the town and agent in
// the path: 401 without a valid token, 403 with a valid token of another agent or town.
func (s *Server) requireAgent(c *gin.Context) {
	token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || token == "" {
		writeError(c, http.StatusUnauthorized, "missing bearer token (the agent token given at start)")
		return
	}
	claims, err := s.cfg.AgentTokens.Verify(token, s.clock())
	if err != nil {
		writeError(c, http.StatusUnauthorized, "invalid agent token: "+err.Error())
		return
	}
	if !strings.EqualFold(claims.TownID, c.Param("townId")) || !strings.EqualFold(claims.AgentID, c.Param("agentId")) {
		writeError(c, http.StatusForbidden, "this token belongs to another agent or town; an agent reports only for itself")
		return
	}
	c.Next()
}

// errorStatus is the one table from domain errors to HTTP statuses.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, db.ErrNotFound), errors.Is(err, db.ErrTownNotFound):
		return http.StatusNotFound, "not found"
	case errors.Is(err, db.ErrTownBusy):
		return http.StatusConflict, "town is busy with a tick; retry shortly"
	}
	return http.StatusInternalServerError, "internal error"
}

func writeError(c *gin.Context, status int, msg string) {
	c.AbortWithStatusJSON(status, gin.H{"error": msg})
}

// fail writes err through the error table; internal errors are logged, not shown.
func (s *Server) fail(c *gin.Context, err error) {
	status, msg := errorStatus(err)
	if status >= 500 {
		if c.Request.Context().Err() != nil {
			return
		}
		s.logger.Error("request failed", "method", c.Request.Method, "path", c.FullPath(), "error", err)
	}
	writeError(c, status, msg)
}
