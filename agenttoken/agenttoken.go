// Package agenttoken issues and verifies the per-agent tokens an agent uses to call back:
// HMAC-SHA256 signed, naming one town and one agent, with an expiry. A token proves who
// the agent is; it cannot be used for another agent or another town.
package agenttoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const prefix = "gta1"

// Errors of Verify.
var (
	ErrMalformed = errors.New("malformed agent token")
	ErrSignature = errors.New("agent token signature does not match")
	ErrExpired   = errors.New("agent token expired")
)

// Claims are what a token names.
type Claims struct {
	TownID    string
	AgentID   string
	ExpiresAt time.Time
}

// Signer issues and verifies tokens with one secret.
type Signer struct {
	secret []byte
}

// NewSigner returns a signer; the secret must be at least 16 bytes.
func NewSigner(secret string) (*Signer, error) {
	if len(secret) < 16 {
		return nil, errors.New("the agent token secret must be at least 16 characters")
	}
	return &Signer{secret: []byte(secret)}, nil
}

// Issue returns a token for the agent in the town, valid until expires.
func (s *Signer) Issue(townID, agentID string, expires time.Time) string {
	body := strings.Join([]string{prefix, townID, agentID, strconv.FormatInt(expires.Unix(), 10)}, ".")
	return body + "." + s.sign(body)
}

// Verify checks a token's signature and expiry at now and returns its claims.
func (s *Signer) Verify(token string, now time.Time) (Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 5 || parts[0] != prefix {
		return Claims{}, ErrMalformed
	}
	body := strings.Join(parts[:4], ".")
	if !hmac.Equal([]byte(s.sign(body)), []byte(parts[4])) {
		return Claims{}, ErrSignature
	}
	exp, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: expiry", ErrMalformed)
	}
	c := Claims{TownID: parts[1], AgentID: parts[2], ExpiresAt: time.Unix(exp, 0)}
	if !now.Before(c.ExpiresAt) {
		return c, ErrExpired
	}
	return c, nil
}

func (s *Signer) sign(body string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
