package reconciler_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "gastown/reconciler" //nolint:revive
)

func timings(pr, warn, escalate, force time.Duration) *Timings {
	return &Timings{PRPollInterval: Duration(pr), GUPPWarn: Duration(warn), GUPPEscalate: Duration(escalate), GUPPForceStop: Duration(force)}
}

func TestTimingsDefaultAndOverride(t *testing.T) {
	t.Parallel()
	var c TownConfig
	require.Equal(t, PRPollInterval, c.PRPollEvery())
	w, e, f := c.GUPPTiers()
	require.Equal(t, []time.Duration{GUPPWarn, GUPPEscalate, GUPPForceStop}, []time.Duration{w, e, f})

	c.Timings = &Timings{GUPPWarn: Duration(20 * time.Second)} // the others keep their defaults
	w, e, f = c.GUPPTiers()
	require.Equal(t, []time.Duration{20 * time.Second, GUPPEscalate, GUPPForceStop}, []time.Duration{w, e, f})
	require.Equal(t, PRPollInterval, c.PRPollEvery())
	require.Equal(t, 80*time.Second, c.GUPPNudgeDedupe(), "four times the warn tier")
	require.Equal(t, GUPPNudgeDedupe, TownConfig{}.GUPPNudgeDedupe())
}

func TestTimingsJSON(t *testing.T) {
	t.Parallel()
	var c TownConfig
	require.NoError(t, json.Unmarshal([]byte(`{"timings":{"pr_poll_interval":"2s","gupp_warn":"20s","gupp_escalate":"40s","gupp_force_stop":"1m"}}`), &c))
	require.Equal(t, timings(2*time.Second, 20*time.Second, 40*time.Second, time.Minute), c.Timings)
	b, err := json.Marshal(c)
	require.NoError(t, err)
	require.JSONEq(t, `{"timings":{"pr_poll_interval":"2s","gupp_warn":"20s","gupp_escalate":"40s","gupp_force_stop":"1m0s"}}`, string(b))

	err = json.Unmarshal([]byte(`{"timings":{"gupp_warn":900}}`), &c)
	require.ErrorContains(t, err, `a duration is a string such as "90s"`)
	err = json.Unmarshal([]byte(`{"timings":{"gupp_warn":"soon"}}`), &c)
	require.ErrorContains(t, err, `invalid duration "soon"`)
}

func TestTownConfigValidate(t *testing.T) {
	t.Parallel()
	zero, neg, huge := 0, -1, 200_000_000
	for _, c := range []struct {
		cfg  TownConfig
		want string
	}{
		{TownConfig{}, ""},
		{TownConfig{MergeStrategy: "pr", ConvoyMergeMode: MergeModeAndMerge, Timings: timings(2*time.Second, 20*time.Second, 40*time.Second, time.Minute)}, ""},
		{TownConfig{MergeStrategy: "rebase"}, `merge_strategy must be "direct" or "pr", not "rebase"`},
		{TownConfig{ConvoyMergeMode: "yolo"}, "convoy_merge_mode must be"},
		{TownConfig{MaxDispatchAttempts: &zero}, "max_dispatch_attempts must be at least 1"},
		{TownConfig{MaxConcurrentPolecats: &neg}, "max_concurrent_polecats must be at least 1"},
		{TownConfig{Refinery: &RefineryConfig{ReviewMode: "vibes"}}, `refinery.review_mode must be "rework" or "comments"`},
		{TownConfig{Refinery: &RefineryConfig{AutoMergeDelayMinutes: &neg}}, "refinery.auto_merge_delay_minutes must not be negative"},
		{TownConfig{Refinery: &RefineryConfig{AutoMergeDelayMinutes: &huge}}, "refinery.auto_merge_delay_minutes must be at most 525600 (a year)"},
		{TownConfig{Timings: &Timings{PRPollInterval: Duration(time.Millisecond)}}, "timings.pr_poll_interval must be at least 1s"},
		{TownConfig{Timings: &Timings{GUPPForceStop: Duration(1_000_000 * time.Hour)}}, "timings.gupp_force_stop must be at most 720h0m0s"},
		{TownConfig{Timings: &Timings{GUPPWarn: Duration(2 * time.Hour)}}, "GUPP timings must grow: warn 2h0m0s < escalate 1h0m0s"},
		{TownConfig{Timings: &Timings{GUPPEscalate: Duration(3 * time.Hour)}}, "escalate 3h0m0s < force stop 2h0m0s"},
	} {
		err := c.cfg.Validate()
		if c.want == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorContains(t, err, c.want)
	}
	require.ErrorContains(t, RigConfig{ReviewMode: "x"}.Validate(), "review_mode")
	require.ErrorContains(t, RigConfig{MergeStrategy: "x"}.Validate(), "merge_strategy")
	require.NoError(t, RigConfig{MergeStrategy: MergeStrategyPR}.Validate())
	require.ErrorContains(t, RigConfig{AutoMergeDelayMinutes: &huge}.Validate(), "auto_merge_delay_minutes must be at most")
}

// A town's timings move R1 and every GUPP tier, and the nudge texts name them.
func TestTownTimingsPaceR1AndGUPP(t *testing.T) {
	t.Parallel()
	cfg := TownConfig{Timings: timings(2*time.Second, 20*time.Second, 40*time.Second, time.Minute)}
	s := town()
	s.Config = cfg
	b, rev := prMR("m", func(b *Bead) {
		b.Metadata = map[string]any{"last_poll_at": ago(3 * time.Second).Format(time.RFC3339Nano)}
	})
	s.Beads, s.Reviews = []Bead{b}, []Review{rev}
	require.Len(t, ofType[PollPR](Reconcile(s, Options{}, now)), 1, "polled after 2 s, not 60 s")
	b.Metadata["last_poll_at"] = ago(time.Second).Format(time.RFC3339Nano)
	require.Empty(t, ofType[PollPR](Reconcile(s, Options{}, now)))

	mk := func(since time.Duration) []Action {
		s := town()
		s.Config = cfg
		s.Beads = []Bead{issue("i", func(b *Bead) { b.Status, b.AssigneeID, b.UpdatedAt = StatusInProgress, "p", now })}
		a := polecat("p", "i", AgentWorking, 10*time.Second)
		a.LastEventAt = ago(since)
		s.Agents = []Agent{a}
		return Reconcile(s, Options{}, now)
	}
	require.Empty(t, mk(19*time.Second))
	require.Equal(t, []Action{SendNudge{AgentID: "p", Tier: TierWarn,
		Message: "You have been idle for 20 seconds with no tool activity. Continue your task or call gt_done."}}, mk(21*time.Second))
	require.Equal(t, SendNudge{AgentID: "p", Tier: TierEscalate,
		Message: "You have been working for over 40 seconds without progress. Wrap up, call gt_done with what you have, or ask for help."}, mk(41 * time.Second)[0])
	require.Equal(t, []Action{
		TransitionAgent{AgentID: "p", From: AgentWorking, To: AgentStalled, Reason: "GUPP force stop — no SDK activity for 1m0s"},
		StopAgent{AgentID: "p", Reason: "exceeded 1m0s GUPP limit"},
		CreateTriageRequest{AgentID: "p", TriageType: "stuck_agent", Reason: "GUPP force stop", HookedBeadID: "i"},
	}, mk(61*time.Second))
}

// A town created through the API starts with SPEC.md §2.11's seed under what the request
// set.
func TestSeedTownConfig(t *testing.T) {
	t.Parallel()
	seeded := SeedTownConfig(TownConfig{})
	require.Equal(t, MergeStrategyPR, seeded.MergeStrategy)
	require.True(t, *seeded.StagedConvoysDefault)
	r := seeded.Refinery
	require.True(t, *r.AutoMerge)
	require.True(t, *r.CodeReview)
	require.Equal(t, "comments", r.ReviewMode)
	require.True(t, *r.AutoResolvePRFeedback)
	require.Equal(t, 5, *r.AutoMergeDelayMinutes)
	require.Nil(t, r.AutoResolveMergeConflicts, "not in the seed: its default applies")
	require.NoError(t, seeded.Validate())

	off, ten := false, 10
	set := SeedTownConfig(TownConfig{MergeStrategy: MergeStrategyDirect, StagedConvoysDefault: &off,
		Refinery: &RefineryConfig{ReviewMode: "rework", AutoMergeDelayMinutes: &ten}})
	require.Equal(t, MergeStrategyDirect, set.MergeStrategy)
	require.False(t, *set.StagedConvoysDefault)
	require.Equal(t, "rework", set.Refinery.ReviewMode)
	require.Equal(t, 10, *set.Refinery.AutoMergeDelayMinutes)
	require.True(t, *set.Refinery.AutoMerge, "what the request left out is seeded")
}
