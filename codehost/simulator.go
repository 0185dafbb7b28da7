package codehost

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"sync"

	"gastown/reconciler"
)

// SimPR is the simulated state of one PR.
type SimPR struct {
	Status   PRStatus
	Feedback reconciler.PRFeedback
	// Err, when set, is returned by every call about the PR.
	Err error
}

// Simulator is an in-memory code host. PRs it has not heard of are open, clean and green;
// MergePR merges them. Tests set states with Set; with an Evolution, PRs opened through
// OpenPR live a random life (review comments, failing checks, conflicts, an approval, an
// outside merge), seeded and repeatable.
type Simulator struct {
	mu     sync.Mutex
	prs    map[string]*SimPR
	merges int
	evo    *Evolution
	rnds   map[string]*rand.Rand // a stream per PR: the same seed, the same life
	polls  map[string]int        // polls of an evolving PR since it was opened or last changed
	fixes  int
}

// Evolution tunes how simulated PRs change on each status poll.
type Evolution struct {
	Seed uint64
	// On each poll of an open, clean PR, the chance it gets an unresolved review comment,
	// a failing check or a merge conflict. A problem stays until an agent fixes the PR
	// (FixPR) or, when SelfHealPolls > 0, until that many polls have passed (someone else
	// fixed it).
	CommentProb, FailProb, ConflictProb float64
	SelfHealPolls                       int
	// MergedOutsideProb is the chance per poll that someone merges a clean PR on the host.
	MergedOutsideProb float64
}

// NewSimulator returns an empty simulated host whose PRs do not change by themselves.
func NewSimulator() *Simulator {
	return &Simulator{prs: make(map[string]*SimPR), polls: map[string]int{}}
}

// NewEvolvingSimulator returns a simulated host whose opened PRs evolve.
func NewEvolvingSimulator(evo Evolution) *Simulator {
	s := NewSimulator()
	s.evo = &evo
	s.rnds = map[string]*rand.Rand{}
	return s
}

// OpenPR registers a PR a simulated agent opened: open, its checks still running.
func (s *Simulator) OpenPR(prURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prs[prURL] = &SimPR{Status: PRStatus{State: "open", MergeableState: "unknown"}, Feedback: reconciler.PRFeedback{HasUncheckedRuns: true}}
}

// FixPR is an agent pushing a fix to a PR: its review threads resolve, its checks pass
// and its conflicts are gone.
func (s *Simulator) FixPR(prURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr, ok := s.prs[prURL]
	if !ok || pr.Status.State != "open" {
		return
	}
	s.fixes++
	s.heal(prURL, pr)
}

// Fixes counts the fixes agents pushed to open PRs.
func (s *Simulator) Fixes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fixes
}

func (s *Simulator) heal(prURL string, pr *SimPR) {
	pr.Feedback = reconciler.PRFeedback{AllChecksPass: true, ReviewDecision: "APPROVED"}
	pr.Status.MergeableState = "clean"
	s.polls[prURL] = 0
}

func (s *Simulator) troubled(pr *SimPR) bool {
	f := pr.Feedback
	return f.HasUnresolvedComments || f.HasFailingChecks || pr.Status.MergeableState == "dirty"
}

// evolve moves an open PR one poll along its random life: its checks finish on the first
// poll; a clean PR may then get a problem or be merged by someone else.
func (s *Simulator) evolve(prURL string, pr *SimPR) {
	if s.evo == nil || pr.Status.State != "open" || pr.Err != nil {
		return
	}
	s.polls[prURL]++
	n := s.polls[prURL]
	if pr.Feedback.HasUncheckedRuns || (s.troubled(pr) && s.evo.SelfHealPolls > 0 && n > s.evo.SelfHealPolls) {
		s.heal(prURL, pr)
		return
	}
	if s.troubled(pr) {
		return // waits for a fix
	}
	rnd := s.rnds[prURL]
	if rnd == nil {
		h := fnv.New64a()
		_, _ = h.Write([]byte(prURL))
		rnd = rand.New(rand.NewPCG(s.evo.Seed, h.Sum64()))
		s.rnds[prURL] = rnd
	}
	f := &pr.Feedback
	switch r := rnd.Float64(); {
	case r < s.evo.CommentProb:
		f.HasUnresolvedComments, f.ReviewDecision = true, "CHANGES_REQUESTED"
	case r < s.evo.CommentProb+s.evo.FailProb:
		f.HasFailingChecks, f.AllChecksPass = true, false
	case r < s.evo.CommentProb+s.evo.FailProb+s.evo.ConflictProb:
		pr.Status.MergeableState = "dirty"
	case r < s.evo.CommentProb+s.evo.FailProb+s.evo.ConflictProb+s.evo.MergedOutsideProb:
		pr.Status.State = "merged"
		return
	default:
		return
	}
	s.polls[prURL] = 0
}

// Set replaces the state of a PR.
func (s *Simulator) Set(prURL string, pr SimPR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prs[prURL] = &pr
}

// Merges counts successful merges.
func (s *Simulator) Merges() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.merges
}

func (s *Simulator) get(prURL string) (*SimPR, error) {
	if _, err := ParsePRURL(prURL); err != nil {
		return nil, err
	}
	pr, ok := s.prs[prURL]
	if !ok {
		pr = &SimPR{Status: PRStatus{State: "open", MergeableState: "clean"}, Feedback: reconciler.PRFeedback{AllChecksPass: true, ReviewDecision: "APPROVED"}}
		s.prs[prURL] = pr
	}
	return pr, pr.Err
}

// PRStatus implements Host.
func (s *Simulator) PRStatus(_ context.Context, prURL string) (PRStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr, err := s.get(prURL)
	if err != nil {
		return PRStatus{}, err
	}
	s.evolve(prURL, pr)
	return pr.Status, nil
}

// PRFeedback implements Host.
func (s *Simulator) PRFeedback(_ context.Context, prURL string) (reconciler.PRFeedback, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr, err := s.get(prURL)
	if err != nil {
		return reconciler.PRFeedback{}, err
	}
	return pr.Feedback, nil
}

// MergePR implements Host.
func (s *Simulator) MergePR(_ context.Context, prURL string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr, err := s.get(prURL)
	if err != nil {
		return err
	}
	if pr.Status.State != "open" || pr.Status.MergeableState == "dirty" {
		return ErrNotMergeable
	}
	pr.Status.State = "merged"
	s.merges++
	return nil
}
