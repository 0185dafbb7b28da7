package db

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// ptr returns nil for the zero value, else a pointer to v: NULL for "unset".
func ptr[T comparable](v T) *T {
	var zero T
	if v == zero {
		return nil
	}
	return &v
}

func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only called on values built from JSON-able domain types.
		panic(err)
	}
	return b
}

func beadFromInternal(b *dbsqlc.Bead) reconciler.Bead {
	out := reconciler.Bead{
		ID:                    b.BeadID,
		Type:                  reconciler.BeadType(b.Type),
		Status:                reconciler.BeadStatus(b.Status),
		Title:                 b.Title,
		Body:                  deref(b.Body),
		RigID:                 deref(b.RigID),
		ParentID:              deref(b.ParentBeadID),
		AssigneeID:            deref(b.AssigneeAgentBeadID),
		Priority:              reconciler.Priority(b.Priority),
		DispatchAttempts:      int(b.DispatchAttempts),
		LastDispatchAttemptAt: timeOrZero(b.LastDispatchAttemptAt),
		CreatedBy:             deref(b.CreatedBy),
		CreatedAt:             b.CreatedAt,
		UpdatedAt:             b.UpdatedAt,
		ClosedAt:              timeOrZero(b.ClosedAt),
	}
	out.Labels = decodeStrings(b.Labels, nil)
	out.Metadata = decodeMetadata(b.Metadata, nil)
	return out
}

func agentFromInternal(a dbsqlc.Agent) reconciler.Agent {
	out := reconciler.Agent{
		ID:               a.AgentID,
		Role:             reconciler.AgentRole(a.Role),
		Name:             a.Name,
		RigID:            deref(a.RigID),
		Identity:         a.Identity,
		Status:           reconciler.AgentStatus(a.Status),
		HookBeadID:       deref(a.CurrentHookBeadID),
		DispatchAttempts: int(a.DispatchAttempts),
		LastActivityAt:   timeOrZero(a.LastActivityAt),
		LastEventType:    deref(a.LastEventType),
		LastEventAt:      timeOrZero(a.LastEventAt),
		StalledAt:        timeOrZero(a.StalledAt),
		CreatedAt:        a.CreatedAt,
	}
	out.ActiveTools = decodeStrings(a.ActiveTools, nil)
	return out
}

func rigFromInternal(r dbsqlc.Rig) reconciler.Rig {
	out := reconciler.Rig{ID: r.RigID, Name: r.Name, GitURL: r.GitUrl, DefaultBranch: r.DefaultBranch}
	_ = json.Unmarshal(r.Config, &out.Config)
	return out
}

func reviewFromInternal(r dbsqlc.ReviewMetadatum) reconciler.Review {
	return reconciler.Review{
		BeadID:              r.BeadID,
		Branch:              r.Branch,
		TargetBranch:        r.TargetBranch,
		PRURL:               deref(r.PrUrl),
		RetryCount:          int(r.RetryCount),
		AutoMergeReadySince: timeOrZero(r.AutoMergeReadySince),
	}
}

func convoyFromInternal(c dbsqlc.ConvoyMetadatum) reconciler.Convoy {
	return reconciler.Convoy{
		BeadID:        c.BeadID,
		TotalBeads:    int(c.TotalBeads),
		ClosedBeads:   int(c.ClosedBeads),
		LandedAt:      timeOrZero(c.LandedAt),
		FeatureBranch: deref(c.FeatureBranch),
		MergeMode:     deref(c.MergeMode),
		Staged:        c.Staged,
	}
}

func townConfig(raw []byte) reconciler.TownConfig {
	var c reconciler.TownConfig
	_ = json.Unmarshal(raw, &c) // validated on write
	return c
}

// decodeStrings decodes a JSON array of strings (labels, active tools); an empty one, the
// common case, skips the decoder (the snapshot decodes every bead of a town every tick).
// intern, when not nil, makes each string (a snapshot's decoder shares the labels that
// repeat across its rows).
func decodeStrings(raw []byte, intern func([]byte) string) []string {
	if isEmptyJSON(raw, '[', ']') {
		return []string{}
	}
	if out, ok := parseFlatStrings(raw, intern); ok {
		return out
	}
	var out []string
	_ = json.Unmarshal(raw, &out) // CHECK constraints guarantee an array
	if out == nil {
		out = []string{}
	}
	return out
}

// decodeMetadata decodes a metadata object, skipping the decoder for an empty one.
// intern, when not nil, makes each key.
func decodeMetadata(raw []byte, intern func([]byte) string) map[string]any {
	if isEmptyJSON(raw, '{', '}') {
		return map[string]any{}
	}
	if out, ok := parseFlatObject(raw, intern); ok {
		return out
	}
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out) // CHECK constraints guarantee an object
	return out
}

// isEmptyJSON reports whether raw is an empty array or object ("[]", "{}", as jsonb
// renders them), or absent.
func isEmptyJSON(raw []byte, open, closing byte) bool {
	return len(raw) == 0 || (len(raw) == 2 && raw[0] == open && raw[1] == closing)
}

// parseFlatStrings parses a JSON array of strings without escapes (labels, tools: what
// jsonb renders as ["a", "b"]); ok is false for anything else, which the caller hands to
// encoding/json. intern, when not nil, makes the strings.
func parseFlatStrings(raw []byte, intern func([]byte) string) (out []string, ok bool) {
	p := jsonScanner{b: raw, intern: intern}
	if !p.consume('[') {
		return nil, false
	}
	out = []string{}
	if p.consume(']') {
		return out, p.end()
	}
	for {
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if p.consume(']') {
			return out, p.end()
		}
		if !p.consume(',') {
			return nil, false
		}
	}
}

// parseFlatObject parses a JSON object whose values are strings without escapes,
// numbers, booleans or null, into what encoding/json would make of it (numbers as
// float64); ok is false for anything else (nested values, escapes). intern, when not nil,
// makes the keys.
func parseFlatObject(raw []byte, intern func([]byte) string) (out map[string]any, ok bool) {
	p := jsonScanner{b: raw}
	if !p.consume('{') {
		return nil, false
	}
	out = map[string]any{}
	if p.consume('}') {
		return out, p.end()
	}
	for {
		p.intern = intern // keys repeat across rows; values mostly do not
		k, ok := p.str()
		p.intern = nil
		if !ok || !p.consume(':') {
			return nil, false
		}
		v, ok := p.scalar()
		if !ok {
			return nil, false
		}
		out[k] = v
		if p.consume('}') {
			return out, p.end()
		}
		if !p.consume(',') {
			return nil, false
		}
	}
}

// jsonScanner reads the simple JSON that parseFlatStrings and parseFlatObject accept.
type jsonScanner struct {
	b      []byte
	i      int
	intern func([]byte) string // makes the strings str reads, when not nil
}

func (p *jsonScanner) skipSpace() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *jsonScanner) consume(c byte) bool {
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonScanner) end() bool {
	p.skipSpace()
	return p.i == len(p.b)
}

// str reads a string without escapes or control characters, in valid UTF-8.
func (p *jsonScanner) str() (string, bool) {
	if !p.consume('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			raw := p.b[start:p.i]
			if !utf8.Valid(raw) { // encoding/json would substitute U+FFFD
				return "", false
			}
			p.i++
			if p.intern != nil {
				return p.intern(raw), true
			}
			return string(raw), true
		case c == '\\' || c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}

// scalar reads a string, number, true, false or null.
func (p *jsonScanner) scalar() (any, bool) {
	p.skipSpace()
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '"':
		return p.str()
	case c == 't' || c == 'f' || c == 'n':
		rest := p.b[p.i:]
		switch {
		case bytes.HasPrefix(rest, []byte("true")):
			p.i += 4
			return true, true
		case bytes.HasPrefix(rest, []byte("false")):
			p.i += 5
			return false, true
		case bytes.HasPrefix(rest, []byte("null")):
			p.i += 4
			return nil, true
		}
		return nil, false
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.i
		if !p.number() {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
		return f, err == nil
	}
	return nil, false
}

// number reads a number in JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *jsonScanner) number() bool {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
