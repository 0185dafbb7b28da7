package db

import (
	"strings"
	"sync"

	"gastown/db/internal/dbsqlc"
	"gastown/reconciler"
)

// stateTables is a set of the tables a town's snapshot is read from.
type stateTables uint8

const (
	stateBeads stateTables = 1 << iota
	stateAgents
	stateDependencies
	stateReviews
	stateRigs
	stateConvoys

	allState = stateBeads | stateAgents | stateDependencies | stateReviews | stateRigs | stateConvoys
)

var stateTableNames = []struct {
	name  string
	table stateTables
}{
	{"beads", stateBeads}, {"agents", stateAgents}, {"bead_dependencies", stateDependencies},
	{"review_metadata", stateReviews}, {"rigs", stateRigs}, {"convoy_metadata", stateConvoys},
}

// writtenStateCache memoizes writtenState by statement text (the statements are the
// program's constants, a few hundred of them).
var writtenStateCache sync.Map

// writtenState returns the state tables a statement may write: those it inserts into or
// updates, and every one for a DELETE (foreign keys cascade from beads and rigs to the
// rest). The statements are this program's, with their keywords in capitals; a
// statement that writes through a function or a trigger would escape it (there are none).
func writtenState(sql string) stateTables {
	if len(sql) < 64 {
		return writtenStateOf(sql) // SAVEPOINT, RELEASE and the like: not worth a map entry
	}
	if v, ok := writtenStateCache.Load(sql); ok {
		return v.(stateTables)
	}
	w := writtenStateOf(sql)
	writtenStateCache.Store(sql, w)
	return w
}

func writtenStateOf(sql string) stateTables {
	if strings.Contains(sql, "DELETE FROM ") {
		return allState
	}
	var w stateTables
	for _, verb := range []string{"INSERT INTO ", "UPDATE "} {
		for rest := sql; ; {
			i := strings.Index(rest, verb)
			if i < 0 {
				break
			}
			rest = rest[i+len(verb):]
			for _, t := range stateTableNames {
				if strings.HasPrefix(rest, t.name) && (len(rest) == len(t.name) || !isIdentChar(rest[len(t.name)])) {
					w |= t.table
				}
			}
		}
	}
	return w
}

func isIdentChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// townState is the town's state as a tick last read it: the snapshot (its beads: every
// bead but agent beads, as snapshotBeadsSQL reads them), and the rows of rigs; they serve
// the tick's reads of a bead, agent or rig by id until the tick writes their table (a
// read then goes to the database, and sees the write).
type townState struct {
	snap     *reconciler.Snapshot
	rigs     []dbsqlc.Rig
	beadIdx  map[string]int // into snap.Beads, built at the first read by id
	agentIdx map[string]int // into snap.Agents
	// handedOut: the snapshot went to the rules or the invariants (LoadSnapshot,
	// LoadState), which hold it; until then the tick may change its rows in place.
	handedOut bool
}

// bead returns a bead as last read, or nil: no state read, the tick wrote beads since, or
// the bead is not among those read (an agent bead, or none). It is the snapshot's: not to
// be changed.
func (s *townState) bead(id string, wrote stateTables) *reconciler.Bead {
	if s == nil || wrote&stateBeads != 0 {
		return nil
	}
	if s.beadIdx == nil {
		s.beadIdx = make(map[string]int, len(s.snap.Beads))
		for i := range s.snap.Beads {
			s.beadIdx[s.snap.Beads[i].ID] = i
		}
	}
	if i, ok := s.beadIdx[id]; ok {
		return &s.snap.Beads[i]
	}
	return nil
}

// agent is bead for agents.
func (s *townState) agent(id string, wrote stateTables) *reconciler.Agent {
	if s == nil || wrote&stateAgents != 0 {
		return nil
	}
	if s.agentIdx == nil {
		s.agentIdx = make(map[string]int, len(s.snap.Agents))
		for i := range s.snap.Agents {
			s.agentIdx[s.snap.Agents[i].ID] = i
		}
	}
	if i, ok := s.agentIdx[id]; ok {
		return &s.snap.Agents[i]
	}
	return nil
}

// rig is bead for rigs (a town has a few: no index).
func (s *townState) rig(id string, wrote stateTables) *dbsqlc.Rig {
	if s == nil || wrote&stateRigs != 0 {
		return nil
	}
	for i := range s.rigs {
		if s.rigs[i].RigID == id {
			return &s.rigs[i]
		}
	}
	return nil
}

// tracksNoConvoy reports whether the state as read shows, still true, that a bead tracks
// no convoy: the tick has not written dependencies since, and none of the bead's tracks
// edges leads to a convoy among the beads read (a bead's type never changes). False means
// "ask the database".
func (s *townState) tracksNoConvoy(beadID string, wrote stateTables) bool {
	if s == nil || wrote&stateDependencies != 0 {
		return false
	}
	for _, d := range s.snap.Dependencies {
		if d.BeadID != beadID || d.Type != reconciler.DepTracks {
			continue
		}
		target := s.bead(d.DependsOnID, 0) // types are immutable: a written beads table does not matter
		if target == nil || target.Type == reconciler.BeadConvoy {
			return false
		}
	}
	return true
}

// prefetchStateMaxRows bounds the beads and agents of a town whose state a tick reads with
// its lock (BeginTick): the drain then reads its beads, agents and rigs from memory instead
// of a round trip each, and the rules' snapshot reads again only the tables the drain
// wrote. A table read twice costs more than the round trips saved once it holds a few
// hundred rows (a 250-bead snapshot takes ~1.3 ms to load), so a larger town, or one this
// process has not read yet, reads its state after the drain, once.
const prefetchStateMaxRows = 100

// townSizes remembers how many beads and agents each town's state held when this process
// last read it. It is a hint: a wrong size only costs a read, or a slice grown.
type townSizes struct {
	mu sync.Mutex
	m  map[string]townSize
}

// townSize is how many beads and agents a town's state held.
type townSize struct{ beads, agents int }

// rows is both together.
func (z townSize) rows() int { return z.beads + z.agents }

// maxTownSizes bounds the towns remembered; past it the memory starts over.
const maxTownSizes = 1 << 17

func (z *townSizes) note(townID string, size townSize) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.m == nil || len(z.m) >= maxTownSizes {
		z.m = make(map[string]townSize)
	}
	z.m[townID] = size
}

// size is townID's size when its state was last read, if it was.
func (z *townSizes) size(townID string) (townSize, bool) {
	z.mu.Lock()
	defer z.mu.Unlock()
	n, ok := z.m[townID]
	return n, ok
}
