package db_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"gastown/db"
	"gastown/db/dbtest"
	"gastown/reconciler"
)

// BenchmarkTickTransaction runs the transaction of a one-event tick (append, lock with
// the tick's first reads, drain, snapshot, the tick's row and schedule, commit, the
// re-check after the commit) from 8 goroutines, each on its own town of 20 issues, on a
// pgx transaction (BEGIN and COMMIT a round trip each, the re-check a third) and on a
// db.PipelinedTx (all three ride with the tick's batches). Same run, same server, a fresh
// database for each: compare the two.
func BenchmarkTickTransaction(b *testing.B) {
	bb := &testBundle{now: testNow()}
	ctx := context.Background()
	// 8 goroutines (a tick worker's default count), one town each.
	procs := runtime.GOMAXPROCS(0)
	perProc := max(1, (8+procs-1)/procs)
	payload := reconciler.DeliveryPayload{NudgeID: "00000000-0000-0000-0000-000000000000"}
	tick := func(townID string, pipelined bool) error {
		if _, err := bb.store.AppendEvents(ctx, bb.store.Pool, townID, []db.NewEvent{{Type: reconciler.EventNudgeDelivered, Payload: payload}}); err != nil {
			return err
		}
		var tx pgx.Tx
		var err error
		if pipelined {
			tx, err = bb.store.BeginPipelined(ctx)
		} else {
			tx, err = bb.store.Pool.Begin(ctx)
		}
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck
		tt, err := bb.store.BeginTick(ctx, tx, townID, false, 100, quiet)
		if err != nil {
			return err
		}
		tt.Now = bb.now
		dr, err := tt.DrainEvents(ctx, db.DrainOptions{MaxEvents: 100, MaxAttempts: 3})
		if err != nil {
			return err
		}
		if _, err := tt.LoadSnapshot(ctx); err != nil {
			return err
		}
		rec := db.TickRecord{EventsDrained: dr.Drained, NextTickAt: bb.now.Add(time.Minute)}
		if pipelined {
			rec.Commit = &db.TickCommit{Recheck: true}
		}
		if err := tt.Finish(ctx, rec); err != nil {
			return err
		}
		if pipelined {
			return rec.Commit.RecheckErr
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		_, err = bb.store.HasPendingEventsAfter(ctx, townID, tt.LastDrainedSeq())
		return err
	}
	for _, pipelined := range []bool{false, true} {
		b.Run(fmt.Sprintf("pipelined=%v", pipelined), func(b *testing.B) {
			// A fresh database for each run: the tables grow with the ticks.
			bb.store = dbtest.NewStore(b)
			towns := make([]string, perProc*procs)
			for i := range towns {
				towns[i] = seedTown(b, bb, 20)
			}
			b.ResetTimer()
			var next atomic.Int64
			b.SetParallelism(perProc)
			b.RunParallel(func(pb *testing.PB) {
				townID := towns[int(next.Add(1)-1)%len(towns)]
				for pb.Next() {
					if err := tick(townID, pipelined); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
