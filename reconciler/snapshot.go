package reconciler

import (
	"slices"
	"time"
)

// Snapshot is everything the rules read about one town, as loaded at the start of
// Phase 1. Call Index once before reading it through the lookup methods.
type Snapshot struct {
	TownID         string
	Draining       bool
	DrainStartedAt time.Time
	Config         TownConfig
	Rigs           []Rig
	Beads          []Bead // every bead of the town except agent beads
	Agents         []Agent
	Dependencies   []Dependency
	Reviews        []Review
	Convoys        []Convoy
	// Nudges are the newest reconciler nudge per agent and source within the town's GUPP nudge dedupe window
	// (the GUPP dedupe record).
	Nudges []NudgeRecord
	// DispatchFailures counts agent starts that failed within CircuitBreakerWindow: what
	// the circuit breaker counts (the reference counted healthy in-flight work too).
	DispatchFailures int

	// beadByID holds the live beads (not closed or failed); doneByID the others, built at
	// the first lookup that misses the live ones: most of a large town's beads are done
	// and most runs never look one up, so a run hashes a fraction of the ids.
	beadByID      map[string]*Bead
	doneByID      map[string]*Bead
	agentByID     map[string]*Agent
	rigByID       map[string]*Rig
	reviewByID    map[string]*Review
	convoyByID    map[string]*Convoy
	agentsByHook  map[string][]*Agent
	blockersOf    map[string][]string // bead → beads that block it
	tracks        map[string][]string // bead → beads it tracks (depends_on of a tracks edge)
	trackedBy     map[string][]string // bead → beads that track it
	refineryByRig map[string]*Agent
	lastNudge     map[string]time.Time // agent + "/" + source → newest
	// The beads the rule passes walk, in the order of Beads: a town's beads are mostly
	// closed issues, which no pass looks at, and a pass over all of a large town's beads
	// reads megabytes of them.
	openIssues, inProgressIssues, inReviewIssues []*Bead
	mergeRequests, convoyBeads                   []*Bead
}

// NudgeRecord is the newest nudge of one source to one agent.
type NudgeRecord struct {
	AgentID string    `json:"agent_id"`
	Source  string    `json:"source"`
	LastAt  time.Time `json:"last_at"`
}

// Index builds the lookup tables. It must be called after the slices are filled and
// before any rule runs; Reconcile calls it.
func (s *Snapshot) Index() {
	// Sized without a pass of its own over the beads (a large town's beads do not fit
	// the cache): a town's live beads are seldom more than half of them, and a map that
	// outgrows its size rehashes once.
	s.beadByID, s.doneByID = make(map[string]*Bead, len(s.Beads)/2+8), nil
	s.openIssues, s.inProgressIssues, s.inReviewIssues, s.mergeRequests, s.convoyBeads = nil, nil, nil, nil, nil
	for i := range s.Beads {
		b := &s.Beads[i]
		if !b.Status.Terminal() {
			s.beadByID[b.ID] = b
		}
		switch b.Type {
		case BeadIssue:
			switch b.Status {
			case StatusOpen:
				s.openIssues = append(s.openIssues, b)
			case StatusInProgress:
				s.inProgressIssues = append(s.inProgressIssues, b)
			case StatusInReview:
				s.inReviewIssues = append(s.inReviewIssues, b)
			}
		case BeadMergeRequest:
			s.mergeRequests = append(s.mergeRequests, b)
		case BeadConvoy:
			s.convoyBeads = append(s.convoyBeads, b)
		}
	}
	s.agentByID = make(map[string]*Agent, len(s.Agents))
	s.agentsByHook = make(map[string][]*Agent, len(s.Agents))
	s.refineryByRig = make(map[string]*Agent, len(s.Rigs))
	for i := range s.Agents {
		a := &s.Agents[i]
		s.agentByID[a.ID] = a
		if a.HookBeadID != "" {
			s.agentsByHook[a.HookBeadID] = append(s.agentsByHook[a.HookBeadID], a)
		}
		if a.Role == RoleRefinery && a.RigID != "" {
			if _, ok := s.refineryByRig[a.RigID]; !ok {
				s.refineryByRig[a.RigID] = a
			}
		}
	}
	s.rigByID = make(map[string]*Rig, len(s.Rigs))
	for i := range s.Rigs {
		s.rigByID[s.Rigs[i].ID] = &s.Rigs[i]
	}
	s.reviewByID = make(map[string]*Review, len(s.Reviews))
	for i := range s.Reviews {
		s.reviewByID[s.Reviews[i].BeadID] = &s.Reviews[i]
	}
	s.convoyByID = make(map[string]*Convoy, len(s.Convoys))
	for i := range s.Convoys {
		s.convoyByID[s.Convoys[i].BeadID] = &s.Convoys[i]
	}
	s.lastNudge = make(map[string]time.Time, len(s.Nudges))
	for _, n := range s.Nudges {
		if k := n.AgentID + "/" + n.Source; n.LastAt.After(s.lastNudge[k]) {
			s.lastNudge[k] = n.LastAt
		}
	}
	// Sized for the edges: a map that grows rehashes what it holds (a large town's
	// tracks edges cost ~15% of its reconcile that way).
	s.blockersOf = make(map[string][]string)
	s.tracks = make(map[string][]string, len(s.Dependencies))
	s.trackedBy = make(map[string][]string, len(s.Dependencies))
	for _, d := range s.Dependencies {
		switch d.Type {
		case DepBlocks:
			s.blockersOf[d.BeadID] = append(s.blockersOf[d.BeadID], d.DependsOnID)
		case DepTracks:
			s.tracks[d.BeadID] = append(s.tracks[d.BeadID], d.DependsOnID)
			s.trackedBy[d.DependsOnID] = append(s.trackedBy[d.DependsOnID], d.BeadID)
		}
	}
}

// Bead returns the bead with the id, or nil. It may build the done beads' index on first
// use: a Snapshot is read by one goroutine at a time.
func (s *Snapshot) Bead(id string) *Bead {
	if b := s.beadByID[id]; b != nil {
		return b
	}
	if s.doneByID == nil {
		s.doneByID = make(map[string]*Bead, len(s.Beads)-len(s.beadByID))
		for i := range s.Beads {
			if b := &s.Beads[i]; s.beadByID[b.ID] == nil {
				s.doneByID[b.ID] = b
			}
		}
	}
	return s.doneByID[id]
}

// Agent returns the agent with the id, or nil.
func (s *Snapshot) Agent(id string) *Agent { return s.agentByID[id] }

// Rig returns the rig with the id, or nil.
func (s *Snapshot) Rig(id string) *Rig { return s.rigByID[id] }

// Review returns the review metadata of an MR bead, or nil.
func (s *Snapshot) Review(beadID string) *Review { return s.reviewByID[beadID] }

// Convoy returns the convoy metadata of a convoy bead, or nil.
func (s *Snapshot) Convoy(beadID string) *Convoy { return s.convoyByID[beadID] }

// AgentsHookedTo returns the agents whose hook is the bead.
func (s *Snapshot) AgentsHookedTo(beadID string) []*Agent { return s.agentsByHook[beadID] }

// Refinery returns the refinery of a rig, or nil.
func (s *Snapshot) Refinery(rigID string) *Agent { return s.refineryByRig[rigID] }

// TrackedBy returns the ids of beads that track the bead (e.g. the MRs of an issue).
func (s *Snapshot) TrackedBy(beadID string) []string { return s.trackedBy[beadID] }

// Tracks returns the ids of beads the bead tracks (e.g. the convoy of an issue).
func (s *Snapshot) Tracks(beadID string) []string { return s.tracks[beadID] }

// HasOpenBlocker reports whether a non-terminal bead blocks the bead. A blocker missing
// from the snapshot (deleted) does not block; a failed blocker counts as resolved.
func (s *Snapshot) HasOpenBlocker(beadID string) bool {
	return slices.ContainsFunc(s.blockersOf[beadID], func(id string) bool {
		b := s.beadByID[id] // a done or missing blocker does not block
		return b != nil && !b.Status.Terminal()
	})
}

// InStagedConvoy reports whether the bead is tracked by a staged convoy.
func (s *Snapshot) InStagedConvoy(beadID string) bool {
	return slices.ContainsFunc(s.tracks[beadID], func(id string) bool {
		c := s.convoyByID[id]
		return c != nil && c.Staged
	})
}

// LastNudge returns when the agent last got a nudge from the source (zero: never).
func (s *Snapshot) LastNudge(agentID, source string) time.Time {
	return s.lastNudge[agentID+"/"+source]
}
