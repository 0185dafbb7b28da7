package reconciler

import "time"

// Timing constants of SPEC.md §4.8. Each rule names the constant it uses.
const (
	// HeartbeatStale is how old a heartbeat may be before an agent counts as lost (A1, A4,
	// B3 alive check, eviction guard).
	HeartbeatStale = 90 * time.Second
	// NotFoundGrace ignores a container "not_found" status this soon after the agent's
	// last activity (cold start, #1358).
	NotFoundGrace = 180 * time.Second
	// StaleInProgress is when an in_progress issue without a live agent is recovered (B3).
	StaleInProgress = 5 * time.Minute
	// OrphanedSource is when an in_review issue whose MRs are all terminal is resolved (B4).
	OrphanedSource = 5 * time.Minute
	// StuckReview is when an in_progress direct-merge MR without a working agent reopens (R2).
	StuckReview = 30 * time.Minute
	// AbandonedMR is when an in_progress direct-merge MR without any agent reopens (R3).
	AbandonedMR = 2 * time.Minute
	// OrphanedPRReview is when an in_progress PR MR nobody polls fails (R4).
	OrphanedPRReview = 30 * time.Minute
	// PRPollInterval rate-limits PR polling (R1).
	PRPollInterval = 60 * time.Second
	// StalledAutoIdle returns a stalled agent to idle (A2).
	StalledAutoIdle = 150 * time.Minute
	// AgentAttemptsResetIdle is how long an exhausted agent must be idle before A3 resets it.
	AgentAttemptsResetIdle = 30 * time.Minute
	// CircuitBreakerWindow is the window over which dispatch failures are counted.
	CircuitBreakerWindow = 30 * time.Minute
	// GUPPWarn, GUPPEscalate and GUPPForceStop are the inactivity tiers of GUPP.
	GUPPWarn      = 15 * time.Minute
	GUPPEscalate  = time.Hour
	GUPPForceStop = 2 * time.Hour
	// GUPPNudgeDedupe suppresses a repeated nudge of the same tier. It is four times the
	// warn tier; a town with its own GUPP timings gets four times its own warn tier.
	GUPPNudgeDedupe = 60 * time.Minute
	// GCRetention is how long an idle unhooked agent is kept.
	GCRetention = 24 * time.Hour
	// LandingMRCooldownBase and LandingMRCooldownMax bound the landing MR retry cooldown
	// min(2^n × base, max).
	LandingMRCooldownBase = 30 * time.Second
	LandingMRCooldownMax  = 30 * time.Minute
	// DrainAutoClear is the drain safety net.
	DrainAutoClear = 7 * time.Minute
	// EventRetention is how long processed events are kept.
	EventRetention = 7 * 24 * time.Hour
	// ActiveTickInterval and IdleTickInterval are the reference cadence (SPEC.md §1.4).
	ActiveTickInterval = 5 * time.Second
	IdleTickInterval   = 5 * time.Minute
	// StalledActivityWindow: a stalled agent counts as active work while its last activity
	// is this recent (SPEC.md §1.5).
	StalledActivityWindow = 30 * time.Minute
)

// Count constants of SPEC.md §4.8.
const (
	// MaxDispatchAttempts is the default cap on a bead's dispatch attempts; rigs may
	// override it with max_dispatch_attempts.
	MaxDispatchAttempts = 5
	// CircuitBreakerThreshold opens the town circuit breaker.
	CircuitBreakerThreshold = 20
	// MaxLandingMRAttempts fails a convoy whose landing MR could not be created.
	MaxLandingMRAttempts = 5
	// PRPollTransientLimit and PRPollNonTransientLimit fail an MR after that many
	// consecutive poll errors of each kind.
	PRPollTransientLimit    = 10
	PRPollNonTransientLimit = 3
	// MaxOpenTriageRequests caps open automatic (non-escalation) triage requests.
	MaxOpenTriageRequests = 5
	// MaxReEscalations caps re-escalation of an unacknowledged escalation.
	MaxReEscalations = 3
)

// DispatchBackoff is how long a bead with the given dispatch_attempts waits after its last
// attempt before it may be dispatched again: ≤1 → 30 s, 2 → 60 s, 3 → 2 min, 4 → 5 min,
// ≥5 → 10 min.
func DispatchBackoff(attempts int) time.Duration {
	switch {
	case attempts <= 1:
		return 30 * time.Second
	case attempts == 2:
		return 60 * time.Second
	case attempts == 3:
		return 2 * time.Minute
	case attempts == 4:
		return 5 * time.Minute
	default:
		return 10 * time.Minute
	}
}

// PolecatNames is the pool polecat names are allocated from, in order; after it is
// exhausted names are "Polecat-<n>".
var PolecatNames = [...]string{
	"Toast", "Maple", "Birch", "Shadow", "Clover", "Ember", "Sage", "Dusk", "Flint", "Coral",
	"Slate", "Reed", "Thorn", "Pike", "Moss", "Wren", "Blaze", "Gale", "Drift", "Lark",
}
