package jobs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"gastown/db"
	"gastown/reconciler"
)

// FuzzEventPayloads appends events of every type with arbitrary payloads straight to a
// town's inbox (past the API's validation, as a buggy agent runtime or an old client
// could) and ticks: the tick never fails or panics, the event is applied or goes dead
// (one attempt here), and the town then applies a good event on its next tick — a poison
// event never blocks a town. `go test` runs the seeds; `go test -fuzz FuzzEventPayloads
// ./jobs` explores.
func FuzzEventPayloads(f *testing.F) {
	s := newScenario(f, reconciler.TownConfig{})
	issue, agent := s.dispatched(f)
	s.svc.Ticker.cfg.MaxEventAttempts = 1
	types := db.KnownEventTypes()
	seeds := []string{`{}`, `null`, `[1, 2]`, `"text"`, `7`, `{"bead_id": 7, "status": {"x": 1}, "branch": []}`,
		`{"bead_id": "` + issue + `", "status": "closed", "branch": "b", "pr_url": "https://x/pr/1", "title": "t", "rig_id": "` + s.rigID + `"}`,
		`{"bead_id": "not-a-uuid", "rig_id": "also-not", "nudge_id": "` + agent + `"}`,
		`{"tasks": [{"bead_id": "` + issue + `"}], "title": "` + strings.Repeat("long ", 400) + `"}`}
	for i := range types {
		for _, p := range seeds {
			f.Add(uint8(i), true, []byte(p))
		}
		f.Add(uint8(i), false, []byte(`{}`))
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, which uint8, withAgent bool, payload []byte) {
		var obj map[string]json.RawMessage
		if json.Unmarshal(payload, &obj) != nil || obj == nil || !utf8.Valid(payload) || strings.Contains(string(payload), `\u0000`) {
			t.Skip("not a JSON object storable as jsonb: the inbox refuses it before any tick")
		}
		ev := db.NewEvent{Type: types[int(which)%len(types)], Payload: json.RawMessage(payload), BeadID: issue}
		if withAgent {
			ev.AgentID = agent
		}
		appended, err := s.store.AppendEvents(ctx, s.store.Pool, s.townID, []db.NewEvent{ev})
		if err != nil {
			t.Fatalf("append %s %s: %v", ev.Type, payload, err)
		}
		if _, err := s.testBundle.tick(ctx, s.townID); err != nil {
			t.Fatalf("tick after %s %s: %v", ev.Type, payload, err)
		}
		got, err := s.store.GetEvent(ctx, s.townID, appended[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == "pending" {
			t.Fatalf("%s %s still pending after a tick with one attempt allowed", ev.Type, payload)
		}
		good := db.NewEvent{Type: reconciler.EventNudgeDelivered, Payload: json.RawMessage(`{"nudge_id": "` + db.NewID() + `"}`)}
		next, err := s.store.AppendEvents(ctx, s.store.Pool, s.townID, []db.NewEvent{good})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.testBundle.tick(ctx, s.townID); err != nil {
			t.Fatalf("tick after the poison %s: %v", ev.Type, err)
		}
		if got, err := s.store.GetEvent(ctx, s.townID, next[0].ID); err != nil || got.State != "processed" {
			t.Fatalf("after %s %s the town did not apply a good event: %+v %v", ev.Type, payload, got, err)
		}
	})
}
