package reconciler_test

import (
	"fmt"
	"testing"
	"time"

	. "gastown/reconciler" //nolint:revive
)

// benchTown builds a town of n issues (a quarter in flight with a polecat each), n/10 MRs
// and their review metadata.
func benchTown(n int) *Snapshot {
	s := town()
	for i := range n {
		id := fmt.Sprintf("i%d", i)
		b := issue(id)
		if i%4 == 0 {
			agent := fmt.Sprintf("p%d", i)
			b.Status, b.AssigneeID = StatusInProgress, agent
			s.Agents = append(s.Agents, Agent{ID: agent, Role: RolePolecat, RigID: rig, Status: AgentWorking,
				HookBeadID: id, LastActivityAt: ago(10 * time.Second)})
		}
		s.Beads = append(s.Beads, b)
	}
	for i := range n / 10 {
		id := fmt.Sprintf("m%d", i)
		s.Beads = append(s.Beads, mr(id, ago(time.Duration(i)*time.Second)))
		s.Reviews = append(s.Reviews, Review{BeadID: id, Branch: id})
	}
	return s
}

func BenchmarkReconcile(b *testing.B) {
	for _, mult := range []int{1, 2, 4, 8} {
		n := 250 * mult
		b.Run(fmt.Sprintf("beads=%d", n), func(b *testing.B) {
			s := benchTown(n)
			b.ReportAllocs()
			for b.Loop() {
				Reconcile(s, Options{}, now)
			}
		})
	}
}

func BenchmarkCheckInvariants(b *testing.B) {
	for _, mult := range []int{1, 2, 4, 8} {
		n := 250 * mult
		b.Run(fmt.Sprintf("beads=%d", n), func(b *testing.B) {
			s := benchTown(n)
			b.ReportAllocs()
			for b.Loop() {
				CheckInvariants(s)
			}
		})
	}
}

// BenchmarkStateHash: the hash each recording tick computes over the state it left.
func BenchmarkStateHash(b *testing.B) {
	for _, n := range []int{250, 500, 1000, 2000} {
		s := benchTown(n)
		b.Run(fmt.Sprintf("beads=%d", n), func(b *testing.B) {
			for b.Loop() {
				StateHash(s)
			}
		})
	}
}
