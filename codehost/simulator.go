package codehost

import (
	"context"
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
// MergePR merges them. Tests and the demo set other states with Set.
type Simulator struct {
	mu     sync.Mutex
	prs    map[string]*SimPR
	merges int
}

// NewSimulator returns an empty simulated host.
func NewSimulator() *Simulator { return &Simulator{prs: make(map[string]*SimPR)} }

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
