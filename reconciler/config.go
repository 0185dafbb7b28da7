package reconciler

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TownConfig is the town-level configuration (towns.config). Pointer fields distinguish
// "not set" (fall back to the default) from an explicit value.
type TownConfig struct {
	MergeStrategy         string          `json:"merge_strategy,omitempty"`
	StagedConvoysDefault  *bool           `json:"staged_convoys_default,omitempty"`
	MaxDispatchAttempts   *int            `json:"max_dispatch_attempts,omitempty"`
	MaxConcurrentPolecats *int            `json:"max_concurrent_polecats,omitempty"`
	ConvoyMergeMode       string          `json:"convoy_merge_mode,omitempty"`
	Refinery              *RefineryConfig `json:"refinery,omitempty"`
	Timings               *Timings        `json:"timings,omitempty"`
}

// SeedTownConfig is the configuration a town created through the API starts with
// (SPEC.md §2.11: PRs, staged convoys, a refinery that reviews with comments, resolves PR
// feedback and auto-merges 5 minutes after a PR is green), under what the request set:
// each field the request leaves unset takes the seed's value. The defaults of an unset
// field (EffectiveCodeReview and friends) are another matter: they are what a town
// without the seed, or a rig without an override, falls back to.
func SeedTownConfig(c TownConfig) TownConfig {
	yes, delay := true, 5
	if c.MergeStrategy == "" {
		c.MergeStrategy = MergeStrategyPR
	}
	if c.StagedConvoysDefault == nil {
		c.StagedConvoysDefault = &yes
	}
	r := RefineryConfig{}
	if c.Refinery != nil {
		r = *c.Refinery
	}
	if r.AutoMerge == nil {
		r.AutoMerge = &yes
	}
	if r.CodeReview == nil {
		r.CodeReview = &yes
	}
	if r.ReviewMode == "" {
		r.ReviewMode = "comments"
	}
	if r.AutoResolvePRFeedback == nil {
		r.AutoResolvePRFeedback = &yes
	}
	if r.AutoMergeDelayMinutes == nil {
		r.AutoMergeDelayMinutes = &delay
	}
	c.Refinery = &r
	return c
}

// RefineryConfig is the town's refinery section.
type RefineryConfig struct {
	AutoMerge                 *bool  `json:"auto_merge,omitempty"`
	CodeReview                *bool  `json:"code_review,omitempty"`
	ReviewMode                string `json:"review_mode,omitempty"`
	AutoResolvePRFeedback     *bool  `json:"auto_resolve_pr_feedback,omitempty"`
	AutoResolveMergeConflicts *bool  `json:"auto_resolve_merge_conflicts,omitempty"`
	AutoMergeDelayMinutes     *int   `json:"auto_merge_delay_minutes,omitempty"`
}

// RigConfig is a rig's override of the town configuration (rigs.config).
type RigConfig struct {
	MergeStrategy             string `json:"merge_strategy,omitempty"`
	CodeReview                *bool  `json:"code_review,omitempty"`
	ReviewMode                string `json:"review_mode,omitempty"`
	AutoResolvePRFeedback     *bool  `json:"auto_resolve_pr_feedback,omitempty"`
	AutoResolveMergeConflicts *bool  `json:"auto_resolve_merge_conflicts,omitempty"`
	AutoMergeDelayMinutes     *int   `json:"auto_merge_delay_minutes,omitempty"`
	ConvoyMergeMode           string `json:"convoy_merge_mode,omitempty"`
	MaxConcurrentPolecats     *int   `json:"max_concurrent_polecats,omitempty"`
	MaxDispatchAttempts       *int   `json:"max_dispatch_attempts,omitempty"`
}

// EffectiveCodeReview is rig override ?? town value ?? true.
func EffectiveCodeReview(town TownConfig, rig *Rig) bool {
	if rig != nil && rig.Config.CodeReview != nil {
		return *rig.Config.CodeReview
	}
	if town.Refinery != nil && town.Refinery.CodeReview != nil {
		return *town.Refinery.CodeReview
	}
	return true
}

// EffectiveMaxDispatchAttempts is rig override ?? town value ?? MaxDispatchAttempts. Unlike
// the reference (SPEC.md §9 item 15), every rule that caps attempts uses it.
func EffectiveMaxDispatchAttempts(town TownConfig, rig *Rig) int {
	if rig != nil && rig.Config.MaxDispatchAttempts != nil && *rig.Config.MaxDispatchAttempts > 0 {
		return *rig.Config.MaxDispatchAttempts
	}
	if town.MaxDispatchAttempts != nil && *town.MaxDispatchAttempts > 0 {
		return *town.MaxDispatchAttempts
	}
	return MaxDispatchAttempts
}

// EffectiveMergeStrategy is rig override ?? town value ?? "direct".
func EffectiveMergeStrategy(town TownConfig, rig *Rig) string {
	if rig != nil && rig.Config.MergeStrategy != "" {
		return rig.Config.MergeStrategy
	}
	if town.MergeStrategy != "" {
		return town.MergeStrategy
	}
	return MergeStrategyDirect
}

// EffectiveAutoResolveConflicts is rig override ?? town value ?? true.
func EffectiveAutoResolveConflicts(town TownConfig, rig *Rig) bool {
	if rig != nil && rig.Config.AutoResolveMergeConflicts != nil {
		return *rig.Config.AutoResolveMergeConflicts
	}
	if town.Refinery != nil && town.Refinery.AutoResolveMergeConflicts != nil {
		return *town.Refinery.AutoResolveMergeConflicts
	}
	return true
}

// Timings lets a town tune the timings that pace its visible life cycle (our extension;
// the reference hard-codes them): how often PRs are polled and when GUPP warns, escalates
// and force-stops. Unset fields keep the defaults of SPEC.md §4.8. Short timings make a
// demo or a test show a whole life cycle in a minute.
type Timings struct {
	PRPollInterval Duration `json:"pr_poll_interval,omitempty"`
	GUPPWarn       Duration `json:"gupp_warn,omitempty"`
	GUPPEscalate   Duration `json:"gupp_escalate,omitempty"`
	GUPPForceStop  Duration `json:"gupp_force_stop,omitempty"`
}

// MinTiming is the shortest timing a town may set, MaxTiming the longest (GUPP's nudge
// dedupe is four times its warn tier, and that must not overflow a time.Duration).
const (
	MinTiming = time.Second
	MaxTiming = 30 * 24 * time.Hour
)

// Duration is a time.Duration written in JSON as a Go duration string ("90s", "15m").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"90s\" or \"15m\", not %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it as \"90s\", \"15m\" or \"2h\"", s)
	}
	*d = Duration(v)
	return nil
}

// timings are the town's timing overrides (all unset when it has none).
func (c TownConfig) timings() Timings {
	if c.Timings == nil {
		return Timings{}
	}
	return *c.Timings
}

// or is d when it is set, else def.
func (d Duration) or(def time.Duration) time.Duration {
	if d > 0 {
		return time.Duration(d)
	}
	return def
}

// PRPollEvery is the town's PR poll interval (Rule R1).
func (c TownConfig) PRPollEvery() time.Duration {
	return c.timings().PRPollInterval.or(PRPollInterval)
}

// GUPPTiers are the town's GUPP warn, escalate and force-stop thresholds.
func (c TownConfig) GUPPTiers() (warn, escalate, forceStop time.Duration) {
	t := c.timings()
	return t.GUPPWarn.or(GUPPWarn), t.GUPPEscalate.or(GUPPEscalate), t.GUPPForceStop.or(GUPPForceStop)
}

// GUPPNudgeDedupe is how long a GUPP nudge of one tier suppresses the next: four times
// the warn tier (60 min with the defaults).
func (c TownConfig) GUPPNudgeDedupe() time.Duration {
	warn, _, _ := c.GUPPTiers()
	return GUPPNudgeDedupe / GUPPWarn * warn
}

// Validate names the first problem of a town configuration.
func (c TownConfig) Validate() error {
	if err := validShared(c.MergeStrategy, c.ConvoyMergeMode, c.MaxDispatchAttempts, c.MaxConcurrentPolecats); err != nil {
		return err
	}
	if r := c.Refinery; r != nil {
		if err := validReviewMode(r.ReviewMode); err != nil {
			return fmt.Errorf("refinery.%w", err)
		}
		if err := validAutoMergeDelay(r.AutoMergeDelayMinutes); err != nil {
			return fmt.Errorf("refinery.%w", err)
		}
	}
	if t := c.Timings; t != nil {
		for _, f := range []struct {
			name string
			d    Duration
		}{{"pr_poll_interval", t.PRPollInterval}, {"gupp_warn", t.GUPPWarn}, {"gupp_escalate", t.GUPPEscalate}, {"gupp_force_stop", t.GUPPForceStop}} {
			if f.d != 0 && time.Duration(f.d) < MinTiming {
				return fmt.Errorf("timings.%s must be at least %s", f.name, MinTiming)
			}
			if time.Duration(f.d) > MaxTiming {
				return fmt.Errorf("timings.%s must be at most %s", f.name, MaxTiming)
			}
		}
		warn, escalate, force := c.GUPPTiers()
		if warn >= escalate || escalate >= force {
			return fmt.Errorf("GUPP timings must grow: warn %s < escalate %s < force stop %s", warn, escalate, force)
		}
	}
	return nil
}

// Validate names the first problem of a rig configuration.
func (c RigConfig) Validate() error {
	if err := validShared(c.MergeStrategy, c.ConvoyMergeMode, c.MaxDispatchAttempts, c.MaxConcurrentPolecats); err != nil {
		return err
	}
	if err := validReviewMode(c.ReviewMode); err != nil {
		return err
	}
	return validAutoMergeDelay(c.AutoMergeDelayMinutes)
}

// MaxAutoMergeDelayMinutes bounds auto_merge_delay_minutes (a year): far beyond any use,
// and far below the minutes a time.Duration can hold.
const MaxAutoMergeDelayMinutes = 365 * 24 * 60

func validAutoMergeDelay(m *int) error {
	switch {
	case m == nil:
		return nil
	case *m < 0:
		return errors.New("auto_merge_delay_minutes must not be negative")
	case *m > MaxAutoMergeDelayMinutes:
		return fmt.Errorf("auto_merge_delay_minutes must be at most %d (a year)", MaxAutoMergeDelayMinutes)
	}
	return nil
}

// validShared checks the settings a town and a rig both have.
func validShared(mergeStrategy, convoyMergeMode string, maxDispatchAttempts, maxConcurrentPolecats *int) error {
	if err := validMergeStrategy(mergeStrategy); err != nil {
		return err
	}
	if err := validConvoyMergeMode(convoyMergeMode); err != nil {
		return err
	}
	if maxDispatchAttempts != nil && *maxDispatchAttempts < 1 {
		return errors.New("max_dispatch_attempts must be at least 1")
	}
	if maxConcurrentPolecats != nil && *maxConcurrentPolecats < 1 {
		return errors.New("max_concurrent_polecats must be at least 1")
	}
	return nil
}

func validMergeStrategy(s string) error {
	if s != "" && s != MergeStrategyDirect && s != MergeStrategyPR {
		return fmt.Errorf("merge_strategy must be %q or %q, not %q", MergeStrategyDirect, MergeStrategyPR, s)
	}
	return nil
}

func validConvoyMergeMode(s string) error {
	if s != "" && s != MergeModeAndMerge && s != MergeModeThenLand {
		return fmt.Errorf("convoy_merge_mode must be %q or %q, not %q", MergeModeAndMerge, MergeModeThenLand, s)
	}
	return nil
}

func validReviewMode(s string) error {
	if s != "" && s != "rework" && s != "comments" {
		return fmt.Errorf("review_mode must be \"rework\" or \"comments\", not %q", s)
	}
	return nil
}
