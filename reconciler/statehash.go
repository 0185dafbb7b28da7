package reconciler

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"hash"
	"slices"
	"strings"
	"time"
)

// StateHash is a compact fingerprint of a town's state: its draining flag, config, rigs,
// beads, agents, dependencies, reviews and convoys, every field of each, in an order of
// their own (by id), independent of the order the snapshot lists them in and of the time
// zone its times carry. Each tick records the hash of the state it left, so a replay of
// the tick can tell whether it reproduced that state (ISSUE 9). The recent-nudge and
// dispatch-failure summaries are inputs read from logs, not state, and are left out.
func StateHash(s *Snapshot) uint64 { return StateDigestOf(s).Sum() }

// StateDigest is the state hash by part, so that a divergence can say where it is.
type StateDigest struct {
	Town, Rigs, Beads, Agents, Dependencies, Reviews, Convoys uint64
}

// StateParts names the parts of a StateDigest, in the order of Parts.
var StateParts = []string{"town (draining, config)", "rigs", "beads", "agents", "dependencies", "reviews", "convoys"}

// Parts lists the part hashes in the order of StateParts.
func (d StateDigest) Parts() []uint64 {
	return []uint64{d.Town, d.Rigs, d.Beads, d.Agents, d.Dependencies, d.Reviews, d.Convoys}
}

// Sum is the state hash: one hash over the parts.
func (d StateDigest) Sum() uint64 {
	h := newStateHasher()
	for _, p := range d.Parts() {
		h.u64(p)
	}
	return h.sum()
}

// DifferingParts names the parts in which two digests differ.
func DifferingParts(a, b []uint64) []string {
	var out []string
	for i := range StateParts {
		if i >= len(a) || i >= len(b) || a[i] != b[i] {
			out = append(out, StateParts[i])
		}
	}
	return out
}

// StateDigestOf hashes each part of a town's state (see StateHash).
func StateDigestOf(s *Snapshot) StateDigest {
	return StateDigest{
		Town: hashPart(func(h *stateHasher) {
			h.bool(s.Draining)
			h.time(s.DrainStartedAt)
			h.json(s.Config)
		}),
		Rigs: hashPart(func(h *stateHasher) {
			rigs := sortedBy(s.Rigs, func(r *Rig) string { return r.ID })
			h.int(len(rigs))
			for _, r := range rigs {
				h.str(r.ID, r.Name, r.GitURL, r.DefaultBranch)
				h.json(r.Config)
			}
		}),
		Beads: hashPart(func(h *stateHasher) {
			beads := sortedBy(s.Beads, func(b *Bead) string { return b.ID })
			h.int(len(beads))
			for _, b := range beads {
				h.str(b.ID, string(b.Type), string(b.Status), b.Title, b.Body, b.RigID, b.ParentID, b.AssigneeID,
					string(b.Priority), b.CreatedBy)
				h.strs(b.Labels)
				h.json(b.Metadata)
				h.int(b.DispatchAttempts)
				h.time(b.LastDispatchAttemptAt, b.CreatedAt, b.UpdatedAt, b.ClosedAt)
			}
		}),
		Agents: hashPart(func(h *stateHasher) {
			agents := sortedBy(s.Agents, func(a *Agent) string { return a.ID })
			h.int(len(agents))
			for _, a := range agents {
				h.str(a.ID, string(a.Role), a.Name, a.RigID, a.Identity, string(a.Status), a.HookBeadID, a.LastEventType)
				h.int(a.DispatchAttempts)
				h.strs(a.ActiveTools)
				h.time(a.LastActivityAt, a.LastEventAt, a.StalledAt, a.CreatedAt)
			}
		}),
		Dependencies: hashPart(func(h *stateHasher) {
			deps := sortedBy(s.Dependencies, func(d *Dependency) string {
				return d.BeadID + "\x00" + d.DependsOnID + "\x00" + string(d.Type)
			})
			h.int(len(deps))
			for _, d := range deps {
				h.str(d.BeadID, d.DependsOnID, string(d.Type))
			}
		}),
		Reviews: hashPart(func(h *stateHasher) {
			reviews := sortedBy(s.Reviews, func(r *Review) string { return r.BeadID })
			h.int(len(reviews))
			for _, r := range reviews {
				h.str(r.BeadID, r.Branch, r.TargetBranch, r.PRURL)
				h.int(r.RetryCount)
				h.time(r.AutoMergeReadySince)
			}
		}),
		Convoys: hashPart(func(h *stateHasher) {
			convoys := sortedBy(s.Convoys, func(c *Convoy) string { return c.BeadID })
			h.int(len(convoys))
			for _, c := range convoys {
				h.str(c.BeadID, c.FeatureBranch, c.MergeMode)
				h.int(c.TotalBeads, c.ClosedBeads)
				h.bool(c.Staged)
				h.time(c.LandedAt)
			}
		}),
	}
}

// hashPart hashes what write writes.
func hashPart(write func(h *stateHasher)) uint64 {
	h := newStateHasher()
	write(h)
	return h.sum()
}

// sortedBy returns pointers to the items ordered by key (the input is left alone).
func sortedBy[T any](items []T, key func(*T) string) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	slices.SortFunc(out, func(a, b *T) int { return strings.Compare(key(a), key(b)) })
	return out
}

// stateHasher feeds typed values to a hash, each delimited so that no two different
// sequences of values write the same bytes.
// Values collect in b, which goes to the digest in chunks (a Write per value costs more
// than the hashing).
type stateHasher struct {
	h hash.Hash
	b []byte
}

func newStateHasher() *stateHasher { return &stateHasher{h: sha256.New(), b: make([]byte, 0, 4<<10)} }

// sum is the first 64 bits of the SHA-256 of what was written.
func (h *stateHasher) sum() uint64 {
	_, _ = h.h.Write(h.b)
	return binary.BigEndian.Uint64(h.h.Sum(nil)[:8])
}

func (h *stateHasher) spill() {
	if len(h.b) >= 16<<10 {
		_, _ = h.h.Write(h.b)
		h.b = h.b[:0]
	}
}

func (h *stateHasher) u64(v uint64) {
	h.b = binary.LittleEndian.AppendUint64(h.b, v)
	h.spill()
}

func (h *stateHasher) str(ss ...string) {
	for _, s := range ss {
		h.b = append(binary.LittleEndian.AppendUint64(h.b, uint64(len(s))), s...)
		h.spill()
	}
}

func (h *stateHasher) strs(ss []string) {
	h.u64(uint64(len(ss)))
	h.str(ss...)
}

func (h *stateHasher) int(vs ...int) {
	for _, v := range vs {
		h.u64(uint64(v))
	}
}

func (h *stateHasher) bool(v bool) {
	if v {
		h.u64(1)
	} else {
		h.u64(0)
	}
}

// time writes an instant (zero stays distinct from the Unix epoch), whatever its zone.
func (h *stateHasher) time(ts ...time.Time) {
	for _, t := range ts {
		if t.IsZero() {
			h.u64(0)
			h.u64(0)
			continue
		}
		h.u64(1)
		h.u64(uint64(t.UnixNano()))
	}
}

// json writes a value by its JSON encoding (maps encode with sorted keys); an empty
// metadata map, the common case, skips the encoder.
func (h *stateHasher) json(v any) {
	if m, ok := v.(map[string]any); ok && len(m) == 0 {
		v = struct{}{} // encodes as {}, like an empty map
	}
	b, err := json.Marshal(v)
	if err != nil { // config and metadata come from JSON; this cannot fail
		b = []byte(err.Error())
	}
	h.b = append(binary.LittleEndian.AppendUint64(h.b, uint64(len(b))), b...)
	h.spill()
}
