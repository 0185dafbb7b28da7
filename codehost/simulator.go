package codehost

import (
	"context"
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
	rnd    *rand.Rand
	polls  map[string]int
}

// Evolution tunes how simulated PRs change on each status poll.
type Evolution struct {
	Seed uint64
	// On each poll of an open PR, the chance it gets an unresolved comment, a failing
	// check or a merge conflict (cleared again every fourth poll: someone fixes it).
	CommentProb, FailProb, ConflictProb float64
	// MergedOutsideProb is the chance per poll that someone merges the PR on the host.
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
	s.rnd = rand.New(rand.NewPCG(evo.Seed, evo.Seed^0x5851f42d4c957f2d))
	return s
}

// OpenPR registers a PR a simulated agent opened: open, its checks still running.
func (s *Simulator) OpenPR(prURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prs[prURL] = &SimPR{Status: PRStatus{State: "open", MergeableState: "unknown"}, Feedback: reconciler.PRFeedback{HasUncheckedRuns: true}}
}

// evolve moves an open PR one poll along its random life.
func (s *Simulator) evolve(prURL string, pr *SimPR) {
	if s.evo == nil || pr.Status.State != "open" || pr.Err != nil {
		return
	}
	s.polls[prURL]++
	n := s.polls[prURL]
	if n == 1 || n%4 == 0 { // checks finished; earlier problems fixed
		pr.Feedback = reconciler.PRFeedback{AllChecksPass: true, ReviewDecision: "APPROVED"}
		pr.Status.MergeableState = "clean"
	}
	f := &pr.Feedback
	switch r := s.rnd.Float64(); {
	case r < s.evo.CommentProb:
		f.HasUnresolvedComments = true
	case r < s.evo.CommentProb+s.evo.FailProb:
		f.HasFailingChecks, f.AllChecksPass = true, false
	case r < s.evo.CommentProb+s.evo.FailProb+s.evo.ConflictProb:
		pr.Status.MergeableState = "dirty"
	case r < s.evo.CommentProb+s.evo.FailProb+s.evo.ConflictProb+s.evo.MergedOutsideProb:
		pr.Status.State = "merged"
	}
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
