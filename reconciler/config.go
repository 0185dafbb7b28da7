package reconciler

// TownConfig is the town-level configuration (towns.config). Pointer fields distinguish
// "not set" (fall back to the default) from an explicit value.
type TownConfig struct {
	MergeStrategy         string          `json:"merge_strategy,omitempty"`
	StagedConvoysDefault  *bool           `json:"staged_convoys_default,omitempty"`
	MaxDispatchAttempts   *int            `json:"max_dispatch_attempts,omitempty"`
	MaxConcurrentPolecats *int            `json:"max_concurrent_polecats,omitempty"`
	ConvoyMergeMode       string          `json:"convoy_merge_mode,omitempty"`
	Refinery              *RefineryConfig `json:"refinery,omitempty"`
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
