package agentrt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The reference's timeouts (SPEC.md §1.3, §5.5).
const (
	StatusTimeout = 10 * time.Second
	callTimeout   = 10 * time.Second
)

// startTimeout bounds a start whose context has no deadline; one with a deadline (the
// start job's, --start-timeout) runs until it. A variable for the tests.
var startTimeout = 60 * time.Second

// HTTP is a Runtime that drives an agent runtime service over HTTP (docs/agent-runtime.md).
type HTTP struct {
	base   *url.URL
	token  string
	client *http.Client
	// CallbackURL is where started agents call back (the gastown API's base URL).
	CallbackURL string
}

// NewHTTP returns a client for the runtime at baseURL, authenticating with token.
func NewHTTP(baseURL, token, callbackURL string) (*HTTP, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent runtime URL %q must be an http(s) URL", baseURL)
	}
	return &HTTP{base: u, token: token, client: &http.Client{}, CallbackURL: callbackURL}, nil
}

// TransientError is a failure worth retrying (network, timeout, 5xx, 429).
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return "transient: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

func (h *HTTP) path(townID, agentID, suffix string) string {
	p := h.base.JoinPath("towns", url.PathEscape(townID), "agents")
	if agentID != "" {
		p = p.JoinPath(url.PathEscape(agentID))
	}
	return p.JoinPath(suffix).String()
}

// do sends one request with its own timeout and returns the status and body.
func (h *HTTP) do(ctx context.Context, timeout time.Duration, method, target string, body any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, &PermanentError{Err: err}
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, nil, &PermanentError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := h.client.Do(req)
	if err != nil { // network errors and timeouts are worth a retry
		return 0, nil, &TransientError{Err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, raw, nil
}

// classify turns a non-2xx answer into a Transient or Permanent error.
func classify(op string, status int, body []byte) error {
	err := fmt.Errorf("%s: HTTP %d: %s", op, status, strings.TrimSpace(string(body)))
	if status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout {
		return &TransientError{Err: err}
	}
	return &PermanentError{Err: err}
}

// StartAgent implements Runtime. An "already running" answer counts as started.
func (h *HTTP) StartAgent(ctx context.Context, req StartRequest) error {
	if req.CallbackURL == "" {
		req.CallbackURL = h.CallbackURL
	}
	timeout := startTimeout
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
	}
	status, body, err := h.do(ctx, timeout, http.MethodPost, h.path(req.TownID, "", "start"), req)
	if err != nil {
		return err
	}
	if status/100 == 2 || strings.Contains(strings.ToLower(string(body)), "already running") {
		return nil
	}
	return classify("start agent", status, body)
}

// StopAgent implements Runtime. An agent the runtime does not know is stopped already.
func (h *HTTP) StopAgent(ctx context.Context, townID, agentID string) error {
	status, body, err := h.do(ctx, callTimeout, http.MethodPost, h.path(townID, agentID, "stop"), nil)
	if err != nil {
		return err
	}
	if status/100 == 2 || status == http.StatusNotFound {
		return nil
	}
	return classify("stop agent", status, body)
}

// SendMessage implements Runtime.
func (h *HTTP) SendMessage(ctx context.Context, townID, agentID, message string) error {
	status, body, err := h.do(ctx, callTimeout, http.MethodPost, h.path(townID, agentID, "message"), map[string]string{"message": message})
	if err != nil {
		return err
	}
	if status/100 == 2 {
		return nil
	}
	return classify("send message", status, body)
}

// Status implements Runtime with the reference's mapping (SPEC.md §1.3 step 3): 404 is
// not_found; any other failure, timeout or malformed body is unknown; else the runtime's
// own word (running, starting, exited, …).
func (h *HTTP) Status(ctx context.Context, townID, agentID string) string {
	status, body, err := h.do(ctx, StatusTimeout, http.MethodGet, h.path(townID, agentID, "status"), nil)
	switch {
	case err != nil:
		return "unknown"
	case status == http.StatusNotFound:
		return "not_found"
	case status/100 != 2:
		return "unknown"
	}
	var out struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(body, &out) != nil || out.Status == "" {
		return "unknown"
	}
	return out.Status
}

// Health reports whether the runtime answers its health check.
func (h *HTTP) Health(ctx context.Context) error {
	status, body, err := h.do(ctx, 5*time.Second, http.MethodGet, h.base.JoinPath("health").String(), nil)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return classify("health", status, body)
	}
	return nil
}
