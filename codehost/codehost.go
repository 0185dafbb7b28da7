// Package codehost is the code-host adapter: PR status, review feedback and merging behind
// one interface, with the error kinds of SPEC.md §5.3, and a simulator.
package codehost

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"gastown/reconciler"
)

// PRStatus is a PR's state and mergeability.
type PRStatus struct {
	State          string // open, merged, closed
	MergeableState string // clean, dirty, blocked, has_hooks, unknown
}

// Host is a code host.
type Host interface {
	PRStatus(ctx context.Context, prURL string) (PRStatus, error)
	PRFeedback(ctx context.Context, prURL string) (reconciler.PRFeedback, error)
	// MergePR merges the PR; ErrNotMergeable when the host refuses (405/409).
	MergePR(ctx context.Context, prURL string) error
}

// ErrorKind classifies a code-host failure (SPEC.md §5.3).
type ErrorKind string

// Error kinds.
const (
	KindNoToken         ErrorKind = "no_token"
	KindHTTPError       ErrorKind = "http_error"
	KindInvalidResponse ErrorKind = "invalid_response"
	KindUnrecognizedURL ErrorKind = "unrecognized_url"
	KindHostMismatch    ErrorKind = "host_mismatch"
)

// Error is a classified code-host failure.
type Error struct {
	Kind       ErrorKind
	HTTPStatus int
	// Transient: 5xx and 429 — worth retrying.
	Transient bool
	Msg       string
}

func (e *Error) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("%s (HTTP %d): %s", e.Kind, e.HTTPStatus, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Kind, e.Msg)
}

// ErrNotMergeable is a merge the host refused.
var ErrNotMergeable = errors.New("PR is not mergeable")

// PRRef is a parsed PR URL.
type PRRef struct {
	Host, Owner, Repo string
	Number            int
}

var prRE = regexp.MustCompile(`^https://([^/]+)/([^/]+)/([^/]+)/pull/(\d+)/?$`)

// ParsePRURL parses https://<host>/<owner>/<repo>/pull/<n>.
func ParsePRURL(u string) (PRRef, error) {
	m := prRE.FindStringSubmatch(u)
	if m == nil {
		return PRRef{}, &Error{Kind: KindUnrecognizedURL, Msg: "not a pull request URL: " + u}
	}
	n, _ := strconv.Atoi(m[4])
	return PRRef{Host: m[1], Owner: m[2], Repo: m[3], Number: n}, nil
}
