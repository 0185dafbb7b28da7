package jobs

import (
	"context"
	"sync"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"gastown/db"
)

// observeBatch bounds how many agents one observation run looks at.
const observeBatch = 2000

// observeParallel bounds concurrent status calls.
const observeParallel = 16

// ObserveArgs is the periodic container observation (SPEC.md §1.3 step 3), run by the
// leader outside any tick: it asks the runtime for the status of every working or stalled
// agent and records each non-running status as a container_status event (which wakes the
// town). "running" is never recorded.
type ObserveArgs struct{}

// Kind implements river.JobArgs.
func (ObserveArgs) Kind() string { return "observe_agents" }

// InsertOpts implements river.JobArgsWithInsertOpts: one run at a time.
func (ObserveArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 1, UniqueOpts: river.UniqueOpts{ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
			rivertype.JobStateRunning, rivertype.JobStateScheduled}}}
}

// ObserveWorker runs the observation.
type ObserveWorker struct {
	river.WorkerDefaults[ObserveArgs]
	svc *Service
}

// Work implements river.Worker.
func (w *ObserveWorker) Work(ctx context.Context, _ *river.Job[ObserveArgs]) error {
	_, err := w.svc.ObserveAgents(ctx)
	return err
}

// ObserveAgents observes the container status of the fleet's working and stalled agents
// and returns how many non-running statuses it recorded.
func (s *Service) ObserveAgents(ctx context.Context) (int, error) {
	agents, err := s.store.ListObservableAgents(ctx, observeBatch)
	if err != nil {
		return 0, err
	}
	var (
		mu       sync.Mutex
		recorded int
		wg       sync.WaitGroup
		sem      = make(chan struct{}, observeParallel)
		towns    = map[string]bool{}
	)
	for _, a := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func(a db.ObservableAgent) {
			defer wg.Done()
			defer func() { <-sem }()
			status := s.runtime.Status(ctx, a.TownID, a.AgentID)
			ok, err := s.store.RecordContainerStatus(ctx, s.store.Pool, a.TownID, a.AgentID, status, "")
			if err != nil {
				s.logger.Warn("record container status", "town_id", a.TownID, "agent_id", a.AgentID, "error", err)
				return
			}
			if ok {
				mu.Lock()
				recorded++
				towns[a.TownID] = true
				mu.Unlock()
			}
		}(a)
	}
	wg.Wait()
	for town := range towns {
		if err := s.Wake(ctx, town); err != nil {
			s.logger.Warn("wake town after observation", "town_id", town, "error", err)
		}
	}
	return recorded, nil
}
