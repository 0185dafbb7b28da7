package codehost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gastown/reconciler"
)

// GitHub is a Host backed by GitHub's REST API (status, checks, reviews, merge) and one
// GraphQL query (review threads and the review decision, which REST does not expose).
type GitHub struct {
	// APIURL is the API base (https://api.github.com, or a GitHub Enterprise /api/v3).
	APIURL string
	// GraphQLURL is the GraphQL endpoint (https://api.github.com/graphql).
	GraphQLURL string
	// Host is the web host PR URLs must name (github.com).
	Host string
	// TokenFor returns the token for a repository ("" = none: a no_token error).
	TokenFor func(owner, repo string) string
	Client   *http.Client
}

// NewGitHub returns a GitHub host for github.com with one token for every repository.
func NewGitHub(token string) *GitHub {
	return &GitHub{
		APIURL: "https://api.github.com", GraphQLURL: "https://api.github.com/graphql", Host: "github.com",
		TokenFor: func(string, string) string { return token }, Client: &http.Client{Timeout: 30 * time.Second},
	}
}

type ghPull struct {
	State          *string `json:"state"`
	Merged         bool    `json:"merged"`
	MergeableState string  `json:"mergeable_state"`
	Draft          bool    `json:"draft"`
	Head           struct {
		SHA string `json:"sha"`
	} `json:"head"`
	RequestedReviewers []json.RawMessage `json:"requested_reviewers"`
}

func (g *GitHub) ref(prURL string) (PRRef, string, error) {
	ref, err := ParsePRURL(prURL)
	if err != nil {
		return ref, "", err
	}
	if !strings.EqualFold(ref.Host, g.Host) {
		return ref, "", &Error{Kind: KindHostMismatch, Msg: fmt.Sprintf("PR is on %s, this code host is %s", ref.Host, g.Host)}
	}
	token := ""
	if g.TokenFor != nil {
		token = g.TokenFor(ref.Owner, ref.Repo)
	}
	if token == "" {
		return ref, "", &Error{Kind: KindNoToken, Msg: "no GitHub token for " + ref.Owner + "/" + ref.Repo}
	}
	return ref, token, nil
}

// call sends one request and decodes a JSON answer into out (when not nil).
func (g *GitHub) call(ctx context.Context, token, method, url string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, &Error{Kind: KindInvalidResponse, Msg: err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	resp, err := g.Client.Do(req)
	if err != nil {
		return 0, &Error{Kind: KindHTTPError, Transient: true, Msg: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, httpError(resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, &Error{Kind: KindInvalidResponse, HTTPStatus: resp.StatusCode, Msg: "malformed JSON: " + err.Error()}
		}
	}
	return resp.StatusCode, nil
}

// httpError classifies a non-2xx answer: 5xx and rate limiting (429, or 403 with the
// rate-limit headers) are transient; other 4xx are permanent.
func httpError(resp *http.Response, body []byte) *Error {
	msg := strings.TrimSpace(string(body))
	var gh struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &gh) == nil && gh.Message != "" {
		msg = gh.Message
	}
	rateLimited := resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusForbidden && (resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != ""))
	if rateLimited {
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			msg += " (retry after " + ra + "s)"
		} else if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
			msg += " (rate limit resets at " + time.Unix(reset, 0).UTC().Format(time.RFC3339) + ")"
		}
	}
	return &Error{Kind: KindHTTPError, HTTPStatus: resp.StatusCode, Transient: rateLimited || resp.StatusCode >= 500, Msg: msg}
}

func (g *GitHub) pull(ctx context.Context, prURL string) (PRRef, string, ghPull, error) {
	ref, token, err := g.ref(prURL)
	if err != nil {
		return ref, "", ghPull{}, err
	}
	var p ghPull
	if _, err := g.call(ctx, token, http.MethodGet, fmt.Sprintf("%s/repos/%s/%s/pulls/%d", g.APIURL, ref.Owner, ref.Repo, ref.Number), nil, &p); err != nil {
		return ref, token, p, err
	}
	if p.State == nil {
		return ref, token, p, &Error{Kind: KindInvalidResponse, Msg: "pull request without a state"}
	}
	return ref, token, p, nil
}

// PRStatus implements Host.
func (g *GitHub) PRStatus(ctx context.Context, prURL string) (PRStatus, error) {
	_, _, p, err := g.pull(ctx, prURL)
	if err != nil {
		return PRStatus{}, err
	}
	st := PRStatus{State: *p.State, MergeableState: p.MergeableState}
	switch {
	case p.Merged:
		st.State = "merged"
	case *p.State != "open" && *p.State != "closed":
		return PRStatus{}, &Error{Kind: KindInvalidResponse, Msg: "unknown pull request state " + strconv.Quote(*p.State)}
	}
	if st.MergeableState == "" {
		st.MergeableState = "unknown"
	}
	return st, nil
}

const threadsQuery = `query($owner: String!, $name: String!, $number: Int!) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewDecision
      isDraft
      reviewThreads(first: 100) { nodes { isResolved } }
    }
  }
}`

// PRFeedback implements Host: unresolved review threads and the review decision
// (GraphQL), check runs of the head commit, and whether reviewers are still requested.
func (g *GitHub) PRFeedback(ctx context.Context, prURL string) (reconciler.PRFeedback, error) {
	ref, token, p, err := g.pull(ctx, prURL)
	if err != nil {
		return reconciler.PRFeedback{}, err
	}
	var gql struct {
		Data struct {
			Repository struct {
				PullRequest *struct {
					ReviewDecision string `json:"reviewDecision"`
					IsDraft        bool   `json:"isDraft"`
					ReviewThreads  struct {
						Nodes []struct {
							IsResolved bool `json:"isResolved"`
						} `json:"nodes"`
					} `json:"reviewThreads"`
				} `json:"pullRequest"`
			} `json:"repository"`
		} `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if _, err := g.call(ctx, token, http.MethodPost, g.GraphQLURL, map[string]any{"query": threadsQuery,
		"variables": map[string]any{"owner": ref.Owner, "name": ref.Repo, "number": ref.Number}}, &gql); err != nil {
		return reconciler.PRFeedback{}, err
	}
	if len(gql.Errors) > 0 || gql.Data.Repository.PullRequest == nil {
		msg := "no pull request in the GraphQL answer"
		if len(gql.Errors) > 0 {
			msg = gql.Errors[0].Message
		}
		return reconciler.PRFeedback{}, &Error{Kind: KindInvalidResponse, Msg: msg}
	}
	pr := gql.Data.Repository.PullRequest
	f := reconciler.PRFeedback{ReviewDecision: pr.ReviewDecision, MergeStateStatus: strings.ToUpper(p.MergeableState), IsDraft: pr.IsDraft || p.Draft}
	for _, th := range pr.ReviewThreads.Nodes {
		if !th.IsResolved {
			f.HasUnresolvedComments = true
		}
	}
	f.ChangesRequested = pr.ReviewDecision == "CHANGES_REQUESTED"
	f.AwaitingApproval = pr.ReviewDecision == "REVIEW_REQUIRED" || len(p.RequestedReviewers) > 0

	var checks struct {
		CheckRuns *[]struct {
			Status     string `json:"status"`
			Conclusion string `json:"conclusion"`
		} `json:"check_runs"`
	}
	if _, err := g.call(ctx, token, http.MethodGet, fmt.Sprintf("%s/repos/%s/%s/commits/%s/check-runs?per_page=100", g.APIURL, ref.Owner, ref.Repo, p.Head.SHA), nil, &checks); err != nil {
		return reconciler.PRFeedback{}, err
	}
	if checks.CheckRuns == nil {
		return reconciler.PRFeedback{}, &Error{Kind: KindInvalidResponse, Msg: "check-runs answer without check_runs"}
	}
	f.AllChecksPass = true
	for _, c := range *checks.CheckRuns {
		switch {
		case c.Status != "completed":
			f.HasUncheckedRuns, f.AllChecksPass = true, false
		case c.Conclusion == "success" || c.Conclusion == "neutral" || c.Conclusion == "skipped":
		default: // failure, timed_out, cancelled, action_required, stale
			f.HasFailingChecks, f.AllChecksPass = true, false
		}
	}
	return f, nil
}

// MergePR implements Host: a 405 or 409 is ErrNotMergeable.
func (g *GitHub) MergePR(ctx context.Context, prURL string) error {
	ref, token, err := g.ref(prURL)
	if err != nil {
		return err
	}
	var out struct {
		Merged bool `json:"merged"`
	}
	status, err := g.call(ctx, token, http.MethodPut, fmt.Sprintf("%s/repos/%s/%s/pulls/%d/merge", g.APIURL, ref.Owner, ref.Repo, ref.Number),
		map[string]string{"merge_method": "squash"}, &out)
	if status == http.StatusMethodNotAllowed || status == http.StatusConflict {
		return fmt.Errorf("%w: %w", ErrNotMergeable, err)
	}
	if err != nil {
		return err
	}
	if !out.Merged {
		return ErrNotMergeable
	}
	return nil
}

var _ Host = (*GitHub)(nil)

// IsTransient reports whether a code-host error is worth retrying.
func IsTransient(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Transient
}
