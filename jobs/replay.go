package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"gastown/db"
	"gastown/reconciler"
)

// ReplayOptions selects what a faithful replay re-runs.
type ReplayOptions struct {
	// From and To bound the reported ticks by id (To 0: the last recorded tick). The
	// replay starts at the latest checkpoint before From and re-runs every recorded tick
	// from there; ticks before From are re-run but not reported.
	From, To int64
	// Config, when set, replaces the town's config at the checkpoint (a what-if replay):
	// actions are compared as usual; state hashes differ by construction and are reported
	// but do not count as a divergence.
	Config *reconciler.TownConfig
	// Reconcile replaces the rules (tests of verify-history use a deliberately changed one).
	Reconcile func(s *reconciler.Snapshot, o reconciler.Options, now time.Time) []reconciler.Action
	// StopAtDivergence ends the replay at the first tick that does not reproduce.
	StopAtDivergence bool
	// FromFirstCheckpoint starts at the town's earliest retained checkpoint instead of
	// the latest one before From (verify-history: the whole retained history).
	FromFirstCheckpoint bool
	// Progress hears after each re-run tick: how many are done of how many in all.
	Progress func(done, total int)
	// LockTimeout bounds the wait for the town's lock (default 5 s).
	LockTimeout time.Duration
}

// TickReplay compares one recorded tick with its re-run.
type TickReplay struct {
	TickID          int64                      `json:"tick_id"`
	ClockAt         time.Time                  `json:"clock_at"`
	EventsApplied   int                        `json:"events_applied"`
	RecordedActions []reconciler.EncodedAction `json:"recorded_actions"`
	ReplayedActions []reconciler.EncodedAction `json:"replayed_actions"`
	ActionsMatch    bool                       `json:"actions_match"`
	RecordedHash    string                     `json:"recorded_state_hash"`
	ReplayedHash    string                     `json:"replayed_state_hash"`
	HashMatch       bool                       `json:"state_hash_matches"`
	// Diff says how the re-run differs: actions only one side emitted ("- recorded",
	// "+ replayed"), or the state it left.
	Diff string `json:"diff,omitempty"`
}

// Reproduced reports whether the re-run matched the record.
func (r TickReplay) Reproduced() bool { return r.ActionsMatch && r.HashMatch }

// ReplayReport is the outcome of a faithful replay.
type ReplayReport struct {
	TownID          string       `json:"town_id"`
	Mode            string       `json:"mode"`
	CheckpointTick  int64        `json:"checkpoint_tick_id"`
	CheckpointAt    time.Time    `json:"checkpoint_taken_at"`
	CheckpointValid bool         `json:"checkpoint_hash_matches"`
	From            int64        `json:"from_tick_id"`
	To              int64        `json:"to_tick_id"`
	TicksReplayed   int          `json:"ticks_replayed"`
	Ticks           []TickReplay `json:"ticks"`
	Reproduced      bool         `json:"reproduced"`
	FirstDivergence *TickReplay  `json:"first_divergence,omitempty"`
}

// ErrNoHistory reports that the town has no checkpoint at or before the window.
var ErrNoHistory = errors.New("no checkpoint at or before the window: history before it is gone (retention)")

// Replay re-runs a town's recorded ticks from a checkpoint inside a transaction it rolls
// back, and compares each with its record (DESIGN.md §1, ISSUE 9). It holds the town's lock
// while it runs: the town's live ticks back off until it ends. Side effects are never
// executed (no job is inserted); nothing it does is kept.
func (s *Service) Replay(ctx context.Context, townID string, opts ReplayOptions) (*ReplayReport, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	rep := &ReplayReport{TownID: townID, Mode: "faithful", From: opts.From, Reproduced: true}
	if opts.Config != nil {
		rep.Mode = "what-if"
	}
	tx, err := s.store.BeginWaiting(ctx, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	last, err := s.store.LockForHistory(ctx, tx, townID)
	if err != nil {
		return nil, err
	}
	rep.To = opts.To
	if rep.To <= 0 || rep.To > last {
		rep.To = last
	}
	before := max(opts.From-1, 0)
	if opts.FromFirstCheckpoint {
		if before, err = s.store.EarliestCheckpointTick(ctx, tx, townID); err != nil {
			return nil, err
		}
	}
	cp, err := s.store.LatestCheckpoint(ctx, tx, townID, before)
	if errors.Is(err, db.ErrNotFound) {
		return nil, ErrNoHistory
	}
	if err != nil {
		return nil, err
	}
	rep.CheckpointTick, rep.CheckpointAt = cp.TickID, cp.TakenAt
	if err := db.RestoreCheckpoint(ctx, tx, cp); err != nil {
		return nil, err
	}
	restored, err := s.store.StateHashOn(ctx, tx, townID)
	if err != nil {
		return nil, err
	}
	rep.CheckpointValid = restored == cp.StateHash
	if opts.Config != nil {
		if err := db.ReplayConfig(ctx, tx, townID, *opts.Config); err != nil {
			return nil, err
		}
	}
	total, err := s.store.CountRecordedTicks(ctx, tx, townID, cp.TickID, rep.To)
	if err != nil {
		return nil, err
	}
	after := cp.TickID
	for {
		page, err := s.store.RecordedTicks(ctx, tx, townID, after, rep.To, 500)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		for i := range page {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			rec := &page[i]
			tr, err := s.replayTick(ctx, tx, townID, rec, opts)
			if err != nil {
				return nil, fmt.Errorf("re-run tick %d: %w", rec.TickID, err)
			}
			rep.TicksReplayed++
			if opts.Progress != nil {
				opts.Progress(rep.TicksReplayed, total)
			}
			if rec.TickID >= opts.From {
				rep.Ticks = append(rep.Ticks, tr)
				// A what-if changes the config, part of the state: only actions count.
				diverged := !tr.ActionsMatch || (!tr.HashMatch && opts.Config == nil)
				if diverged && rep.FirstDivergence == nil {
					rep.Reproduced, rep.FirstDivergence = false, &tr
					if opts.StopAtDivergence {
						return rep, nil
					}
				}
			}
			after = rec.TickID
		}
	}
	return rep, nil
}

// replayTick makes exactly the recorded tick's events pending (those a previous re-run
// failed again, as recorded, are not for this one), re-runs the tick and compares.
func (s *Service) replayTick(ctx context.Context, tx pgx.Tx, townID string, rec *db.RecordedTick, opts ReplayOptions) (TickReplay, error) {
	seqs := append(append([]int64{}, rec.AppliedSeqs...), rec.FailedSeqs...)
	if err := db.ReplayPending(ctx, tx, townID, seqs); err != nil {
		return TickReplay{}, err
	}
	res, err := s.Ticker.Tick(ctx, tx, townID, TickOptions{Replay: rec, Reconcile: opts.Reconcile})
	if err != nil {
		return TickReplay{}, err
	}
	replayed, err := reconciler.EncodeActions(res.Actions)
	if err != nil {
		return TickReplay{}, err
	}
	tr := TickReplay{
		TickID: rec.TickID, ClockAt: rec.ClockAt, EventsApplied: res.Drain.Applied,
		RecordedActions: rec.Actions, ReplayedActions: replayed,
		RecordedHash: hashString(rec.StateHash), ReplayedHash: hashString(res.StateHash),
		HashMatch: rec.StateHash == res.StateHash,
	}
	var diff []string
	tr.ActionsMatch, diff = diffActions(rec.Actions, replayed)
	if res.Drain.Applied != len(rec.AppliedSeqs) {
		diff = append(diff, fmt.Sprintf("events: the record applied %d, the re-run %d (events pruned by retention?)", len(rec.AppliedSeqs), res.Drain.Applied))
	}
	if !tr.HashMatch {
		where := ""
		if len(rec.StateParts) > 0 {
			where = "; differs in " + strings.Join(reconciler.DifferingParts(rec.StateParts, res.StateParts), ", ")
		}
		diff = append(diff, fmt.Sprintf("state after the tick: hash %s recorded, %s replayed%s", tr.RecordedHash, tr.ReplayedHash, where))
	}
	tr.Diff = strings.Join(diff, "\n")
	return tr, nil
}

func hashString(h uint64) string { return strconv.FormatUint(h, 16) }

// diffActions compares two action lists by type and fields (as JSON values: the record
// went through jsonb, which reorders keys). It reports whether they are equal and, if
// not, the actions only one side has, in their order.
func diffActions(recorded, replayed []reconciler.EncodedAction) (bool, []string) {
	key := func(a reconciler.EncodedAction) string {
		var v any
		_ = json.Unmarshal(a.Fields, &v)
		b, _ := json.Marshal(v) // canonical: sorted keys, no spaces
		return string(a.Type) + " " + string(b)
	}
	rk, pk := make([]string, len(recorded)), make([]string, len(replayed))
	for i, a := range recorded {
		rk[i] = key(a)
	}
	for i, a := range replayed {
		pk[i] = key(a)
	}
	if slices.Equal(rk, pk) {
		return true, nil
	}
	count := func(ks []string) map[string]int {
		m := map[string]int{}
		for _, k := range ks {
			m[k]++
		}
		return m
	}
	inRec, inRep := count(rk), count(pk)
	var out []string
	for _, k := range rk {
		if inRep[k] > 0 {
			inRep[k]--
			continue
		}
		out = append(out, "- recorded: "+k)
	}
	for _, k := range pk {
		if inRec[k] > 0 {
			inRec[k]--
			continue
		}
		out = append(out, "+ replayed: "+k)
	}
	if len(out) == 0 {
		out = append(out, "same actions in another order")
	}
	return false, out
}
