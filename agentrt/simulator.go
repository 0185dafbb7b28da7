package agentrt

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"gastown/reconciler"
)

// SimConfig tunes the simulator. Zero values take the defaults.
type SimConfig struct {
	// HeartbeatInterval is how often a running agent heartbeats (default 30 s).
	HeartbeatInterval time.Duration
	// WorkMin and WorkMax bound how long an agent works before it reports done
	// (defaults 2 s and 5 s).
	WorkMin, WorkMax time.Duration
	// Seed makes the behaviour repeatable.
	Seed uint64
	// CrashProb is the chance an agent's process dies before it reports done (it reports
	// completed/failed); HangProb that it keeps heartbeating but never finishes; SilentProb
	// that it goes silent (no heartbeat, no report). The rest finish normally.
	CrashProb, HangProb, SilentProb float64
	// PRHost receives the PRs simulated refineries open when the merge strategy is pr
	// (nil: the PR URL is reported without registering it anywhere).
	PRHost PRRegistrar
}

// PRRegistrar is told about the PRs simulated agents open and fix (the code-host
// simulator).
type PRRegistrar interface {
	OpenPR(prURL string)
	// FixPR: a fix-up agent resolved the PR's review threads, failing checks and conflicts.
	FixPR(prURL string)
}

// Simulator is a Runtime whose agents run as goroutines: each heartbeats, works for a
// random time, reports done (a polecat with a branch; a refinery merges directly), then
// reports its process exit. Close stops them all.
type Simulator struct {
	cfg      SimConfig
	reporter Reporter
	logger   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	running  map[string]*simAgent // by town/agent
	starts   int
	messages int
	prs      map[string]int // PRs opened per repository
	runs     map[string]int // runs per bead, role and repository
}

// NewSimulator returns a simulator reporting through r.
func NewSimulator(cfg SimConfig, r Reporter, logger *slog.Logger) *Simulator {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 30 * time.Second
	}
	if cfg.WorkMin <= 0 {
		cfg.WorkMin = 2 * time.Second
	}
	if cfg.WorkMax < cfg.WorkMin {
		cfg.WorkMax = max(cfg.WorkMin, 5*time.Second)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Simulator{
		cfg: cfg, reporter: r, logger: logger, ctx: ctx, cancel: cancel,
		running: make(map[string]*simAgent),
		prs:     map[string]int{},
		runs:    map[string]int{},
	}
}

// Starts returns how many agents the simulator has started.
func (s *Simulator) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// StartAgent implements Runtime.
func (s *Simulator) StartAgent(_ context.Context, req StartRequest) error {
	key := req.TownID + "/" + req.AgentID
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return fmt.Errorf("simulator is closed")
	}
	if _, ok := s.running[key]; ok {
		return nil // already running counts as started
	}
	// Each run draws from its own stream, named by what it works on: the same seed gives
	// the same fates, durations and PR numbers whatever order the starts arrive in.
	runKey := req.GitURL + "\x00" + string(req.Role) + "\x00" + req.BeadTitle
	s.runs[runKey]++
	rnd := rand.New(rand.NewPCG(s.cfg.Seed, streamOf(runKey, s.runs[runKey])))
	work := s.cfg.WorkMin
	if span := s.cfg.WorkMax - s.cfg.WorkMin; span > 0 {
		work += time.Duration(rnd.Int64N(int64(span)))
	}
	fate := fateDone
	switch r := rnd.Float64(); {
	case r < s.cfg.CrashProb:
		fate = fateCrash
	case r < s.cfg.CrashProb+s.cfg.HangProb:
		fate = fateHang
	case r < s.cfg.CrashProb+s.cfg.HangProb+s.cfg.SilentProb:
		fate = fateSilent
	}
	prNumber := 0
	if req.Role == reconciler.RoleRefinery && req.MergeStrategy == reconciler.MergeStrategyPR && req.PRURL == "" {
		s.prs[req.GitURL]++ // a rig's refinery reviews one MR at a time: numbers follow the work
		prNumber = s.prs[req.GitURL]
	}
	ctx, cancel := context.WithCancel(s.ctx)
	ag := &simAgent{stop: cancel, nudged: make(chan struct{}, 1)}
	s.running[key] = ag
	s.starts++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		release := func() {
			s.mu.Lock()
			if s.running[key] == ag {
				delete(s.running, key)
			}
			s.mu.Unlock()
		}
		defer func() {
			release()
			cancel()
		}()
		s.run(ctx, req, work, fate, prNumber, ag.nudged, release)
	}()
	return nil
}

// StopAgent implements Runtime.
func (s *Simulator) StopAgent(_ context.Context, townID, agentID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ag, ok := s.running[townID+"/"+agentID]; ok {
		ag.stop()
	}
	return nil
}

// SendMessage implements Runtime: a running simulated agent accepts any message, and a
// hung one wakes up (a GUPP nudge works) and finishes its bead.
func (s *Simulator) SendMessage(_ context.Context, townID, agentID, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ag, ok := s.running[townID+"/"+agentID]
	if !ok {
		return fmt.Errorf("agent %s is not running", agentID)
	}
	s.messages++
	select {
	case ag.nudged <- struct{}{}:
	default: // a wake-up is already pending
	}
	return nil
}

// Status implements Runtime: running while the simulated agent runs, else exited.
func (s *Simulator) Status(_ context.Context, townID, agentID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.running[townID+"/"+agentID]; ok {
		return "running"
	}
	return "exited"
}

// Messages counts delivered messages.
func (s *Simulator) Messages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messages
}

// Close stops every simulated agent and waits for them.
func (s *Simulator) Close() {
	s.cancel()
	s.wg.Wait()
}

// simAgent is one running simulated agent.
type simAgent struct {
	stop   context.CancelFunc
	nudged chan struct{}
}

type fate int

const (
	fateDone fate = iota
	fateCrash
	fateHang
	fateSilent
)

// run is one simulated agent's life. It calls release before it reports its end, so a start
// of the same agent that follows the report starts a new run instead of finding this one
// "already running".
func (s *Simulator) run(ctx context.Context, req StartRequest, work time.Duration, fate fate, prNumber int, nudged <-chan struct{}, release func()) {
	log := s.logger.With("town_id", req.TownID, "agent_id", req.AgentID, "role", req.Role)
	report := func(what string, err error) bool {
		if err != nil && ctx.Err() == nil {
			log.Warn("simulated agent could not report", "what", what, "error", err)
		}
		return err == nil
	}
	// The SDK activity watermark moves while the agent works and freezes when it hangs:
	// heartbeats keep coming, and GUPP measures the silence from the watermark.
	activity := Activity{LastEventType: "session.started", LastEventAt: time.Now()}
	report("heartbeat", s.reporter.Heartbeat(ctx, req.TownID, req.AgentID, activity))
	deadline := time.NewTimer(work)
	defer deadline.Stop()
	beat := time.NewTicker(s.cfg.HeartbeatInterval)
	defer beat.Stop()
	hung := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if fate == fateSilent {
				continue // gone quiet: the reconciler's heartbeat checks must notice
			}
			if !hung {
				activity = Activity{LastEventType: "message.part.updated", LastEventAt: time.Now()}
			}
			report("heartbeat", s.reporter.Heartbeat(ctx, req.TownID, req.AgentID, activity))
		case <-nudged:
			if hung && fate == fateHang {
				// The nudge worked: the agent picks its task up again and finishes it.
				log.Info("simulated agent nudged awake")
				hung, fate = false, fateDone
				activity = Activity{LastEventType: "message.updated", LastEventAt: time.Now()}
				deadline.Reset(s.cfg.WorkMin)
			}
		case <-deadline.C:
			switch fate {
			case fateHang, fateSilent:
				hung = true
				deadline.Reset(time.Hour) // never finishes unless nudged; a stop ends it
				continue
			case fateCrash:
				release()
				report("completed", s.reporter.Completed(ctx, req.TownID, req.AgentID,
					reconciler.AgentCompletedPayload{Status: "failed", Reason: "simulated crash", BeadID: req.BeadID}))
				return
			}
			done := reconciler.AgentDonePayload{Summary: "simulated work on " + req.BeadTitle}
			switch {
			case req.Role == reconciler.RoleRefinery:
				done.Branch = req.Branch
				if req.MergeStrategy == reconciler.MergeStrategyPR && req.PRURL == "" {
					done.PRURL = prURLFor(req.GitURL, prNumber)
					if s.cfg.PRHost != nil {
						s.cfg.PRHost.OpenPR(done.PRURL)
					}
				}
			case req.PRURL != "":
				// A fix-up of an open PR (review feedback, conflicts): push to its branch.
				done.Branch = req.Branch
				if s.cfg.PRHost != nil {
					s.cfg.PRHost.FixPR(req.PRURL)
				}
			default:
				done.Branch = fmt.Sprintf("gt/%s/%s", strings.ToLower(req.AgentName), shortID(req.BeadID))
			}
			release()
			if !report("done", s.reporter.Done(ctx, req.TownID, req.AgentID, done)) {
				return
			}
			report("completed", s.reporter.Completed(ctx, req.TownID, req.AgentID,
				reconciler.AgentCompletedPayload{Status: "completed", BeadID: req.BeadID}))
			return
		}
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// prURLFor makes the URL of PR n of a rig's repository (github.com/<owner>/<repo> when the
// git URL names one).
func prURLFor(gitURL string, n int) string {
	repo := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(gitURL, "https://"), "http://"), ".git")
	if strings.Count(repo, "/") < 2 {
		repo = "github.com/sim/repo"
	}
	return fmt.Sprintf("https://%s/pull/%d", repo, n)
}

// streamOf names a random stream: a hash of a key and a counter.
func streamOf(key string, n int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return h.Sum64() ^ uint64(n)*0x9e3779b97f4a7c15
}
