package reconciler

import (
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func hashFixture() *Snapshot {
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return &Snapshot{
		Config: TownConfig{MergeStrategy: "direct"},
		Rigs:   []Rig{{ID: "r1", Name: "repo", GitURL: "https://x/y", DefaultBranch: "main"}},
		Beads: []Bead{
			{ID: "b1", Type: BeadIssue, Status: StatusOpen, Title: "one", Labels: []string{"x"}, Metadata: map[string]any{"k": 1.0}, CreatedAt: at, UpdatedAt: at},
			{ID: "b2", Type: BeadIssue, Status: StatusClosed, Title: "two", Labels: []string{}, Metadata: map[string]any{}, CreatedAt: at, UpdatedAt: at, ClosedAt: at},
		},
		Agents:       []Agent{{ID: "a1", Role: RolePolecat, Name: "P1", Identity: "p1", Status: AgentWorking, HookBeadID: "b1", CreatedAt: at}},
		Dependencies: []Dependency{{BeadID: "b1", DependsOnID: "b2", Type: DepBlocks}},
		Reviews:      []Review{{BeadID: "b2", Branch: "f", TargetBranch: "main"}},
		Convoys:      []Convoy{{BeadID: "b2", TotalBeads: 2}},
	}
}

// TestStateHashSeesEveryField changes each field of each entity in turn (reflection, so a
// field added later is covered without touching this test) and requires the hash to move.
func TestStateHashSeesEveryField(t *testing.T) {
	base := StateHash(hashFixture())
	entities := map[string]func(s *Snapshot) reflect.Value{
		"Rig":        func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Rigs[0]).Elem() },
		"Bead":       func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Beads[0]).Elem() },
		"Agent":      func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Agents[0]).Elem() },
		"Dependency": func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Dependencies[0]).Elem() },
		"Review":     func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Reviews[0]).Elem() },
		"Convoy":     func(s *Snapshot) reflect.Value { return reflect.ValueOf(&s.Convoys[0]).Elem() },
	}
	for name, pick := range entities {
		n := pick(hashFixture()).NumField()
		for i := range n {
			s := hashFixture()
			f := pick(s).Field(i)
			field := pick(s).Type().Field(i).Name
			require.True(t, mutate(f), "%s.%s: the test cannot change a field of kind %s — teach mutate", name, field, f.Kind())
			require.NotEqual(t, base, StateHash(s), "%s.%s does not reach the state hash", name, field)
		}
	}
	for _, change := range []func(s *Snapshot){
		func(s *Snapshot) { s.Draining = true },
		func(s *Snapshot) { s.DrainStartedAt = time.Unix(1, 0) },
		func(s *Snapshot) { s.Config.MergeStrategy = "pr" },
		func(s *Snapshot) { s.Beads = s.Beads[:1] },
		func(s *Snapshot) { s.Beads[0].Labels = append(s.Beads[0].Labels, "") },
	} {
		s := hashFixture()
		change(s)
		require.NotEqual(t, base, StateHash(s))
	}
}

// TestStateHashIgnoresOrderAndZone: the same state listed in another order, with its times
// in another zone, hashes the same.
func TestStateHashIgnoresOrderAndZone(t *testing.T) {
	s := hashFixture()
	want := StateHash(s)
	s.Beads[0], s.Beads[1] = s.Beads[1], s.Beads[0]
	zone := time.FixedZone("elsewhere", 5*3600)
	for i := range s.Beads {
		s.Beads[i].CreatedAt = s.Beads[i].CreatedAt.In(zone)
	}
	require.Equal(t, want, StateHash(s))
	s.Nudges = []NudgeRecord{{AgentID: "a1", Source: "gupp"}} // an input, not state
	s.DispatchFailures = 3
	require.Equal(t, want, StateHash(s))
}

// mutate changes v to another value of its type; false when it does not know how.
func mutate(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "~")
	case reflect.Int:
		v.SetInt(v.Int() + 7)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.ValueOf("changed"), reflect.ValueOf(any(true)))
		v.Set(m)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
	case reflect.Struct:
		if t, ok := v.Interface().(time.Time); ok {
			v.Set(reflect.ValueOf(t.Add(time.Microsecond)))
			return true
		}
		for i := range v.NumField() {
			if v.Field(i).CanSet() && mutate(v.Field(i)) {
				return true
			}
		}
		return false
	default:
		return false
	}
	return true
}

// TestStateDigestNamesTheDifferingPart: a change shows in its own part of the digest only.
func TestStateDigestNamesTheDifferingPart(t *testing.T) {
	base := StateDigestOf(hashFixture())
	s := hashFixture()
	s.Agents[0].Status = AgentIdle
	s.Reviews[0].RetryCount++
	changed := StateDigestOf(s)
	require.Equal(t, []string{"agents", "reviews"}, DifferingParts(base.Parts(), changed.Parts()))
	require.Equal(t, StateHash(s), changed.Sum())
	require.NotEqual(t, base.Sum(), changed.Sum())
	require.Equal(t, StateParts, DifferingParts(base.Parts(), nil), "a record without parts names them all")
}
