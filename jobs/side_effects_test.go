package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"gastown/codehost"
	"gastown/db"
	"gastown/reconciler"
)

func job[T river.JobArgs](id int64, args T) *river.Job[T] {
	return &river.Job[T]{JobRow: &rivertype.JobRow{ID: id, Attempt: 1}, Args: args}
}

// dispatchedStart makes a town whose tick dispatched one agent and returns the town and
// the arguments of that agent's start job (not run).
func (b *testBundle) dispatchedStart(t *testing.T) (string, StartAgentArgs) {
	t.Helper()
	ctx := context.Background()
	townID, rigID := b.newTown(t)
	_, err := b.svc.Events.Append(ctx, townID, beadCreated(rigID, "w"))
	require.NoError(t, err)
	res, err := b.tick(ctx, townID)
	require.NoError(t, err)
	require.Len(t, res.SideEffects, 1)
	return townID, sideEffectJob(townID, res.TickID, res.SideEffects[0].(db.StartAgent)).Args.(StartAgentArgs)
}

func TestRetriedSideEffectReportsItsOutcomeOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, args := b.dispatchedStart(t)

	w := &StartAgentWorker{svc: b.svc}
	j := job(4242, args)
	require.NoError(t, w.Work(ctx, j))
	require.NoError(t, w.Work(ctx, j), "River retries the job (e.g. its worker died after reporting)")
	evs, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, evs, 1, "one outcome per job, however often it runs")
	require.Equal(t, string(reconciler.EventAgentDispatched), evs[0].Type)
	require.Equal(t, 1, b.sim.Starts(), "a second start of a running agent is not a second agent")
}

// TestRerunOfAReportedStartDoesNotStartAgain: River runs a start job again when its
// attempt did not finish in River's eyes (the process died after the report committed,
// or River's asynchronous commit of the completion was lost). A rerun whose outcome is
// recorded does not call the runtime; one without it starts the agent.
func TestRerunOfAReportedStartDoesNotStartAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, args := b.dispatchedStart(t)

	// The first attempt's report, as it committed before the process died.
	_, err := b.svc.Events.Append(ctx, townID, db.NewEvent{Type: reconciler.EventAgentDispatched, AgentID: args.Request.AgentID,
		Payload: reconciler.AgentDispatchedPayload{BeadID: args.Request.BeadID}, IdempotencyKey: outcomeKey(77)})
	require.NoError(t, err)
	rerun := job(77, args)
	rerun.Attempt = 2
	w := &StartAgentWorker{svc: b.svc}
	require.NoError(t, w.Work(ctx, rerun))
	require.Zero(t, b.sim.Starts(), "the reported start is not made again")

	other := job(78, args) // a rerun of a job that never reported
	other.Attempt = 2
	require.NoError(t, w.Work(ctx, other))
	require.Equal(t, 1, b.sim.Starts())
}

// TestFailedReportDoesNotRedoTheSideEffect makes the database refuse the report of an
// agent start twice (a trigger raises on the insert, as an outage would fail it): the job
// retries the report, not the start — the runtime sees one start, the town one outcome.
func TestFailedReportDoesNotRedoTheSideEffect(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, args := b.dispatchedStart(t)

	// A sequence is not transactional: the raise does not undo the count.
	_, err := b.store.Pool.Exec(ctx, `CREATE SEQUENCE refused_reports;
CREATE FUNCTION refuse_reports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.event_type = 'agent_dispatched' AND nextval('refused_reports') <= 2 THEN
        RAISE EXCEPTION 'injected: the database refuses the report';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_reports BEFORE INSERT ON town_events FOR EACH ROW EXECUTE FUNCTION refuse_reports();`)
	require.NoError(t, err)

	w := &StartAgentWorker{svc: b.svc}
	require.NoError(t, w.Work(ctx, job(4343, args)), "the report got through on its third try")
	var tries int64
	require.NoError(t, b.store.Pool.QueryRow(ctx, `SELECT last_value FROM refused_reports`).Scan(&tries))
	require.EqualValues(t, 3, tries, "two refused reports, then the one that committed")
	require.Equal(t, 1, b.sim.Starts(), "the agent was started once")
	evs, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, string(reconciler.EventAgentDispatched), evs[0].Type)
}

func TestPollAndMergeThroughTheCodeHost(t *testing.T) {
	t.Parallel()
	host := codehost.NewSimulator()
	b := setup(t, testOpts{})
	b.svc.codeHost = host
	ctx := context.Background()
	townID, _ := b.newTown(t)
	url := "https://github.com/o/r/pull/9"
	mr := db.NewID()

	poll := &PollPRWorker{svc: b.svc}
	ev, err := b.svc.pollPR(ctx, PollPRArgs{TownID: townID, MRBeadID: mr, PRURL: url, WantFeedback: true})
	require.NoError(t, err)
	require.Equal(t, reconciler.EventPRPolled, ev.Type)
	p := ev.Payload.(reconciler.PRPolledPayload)
	require.Equal(t, "clean", p.MergeableState)
	require.NotNil(t, p.Feedback)
	require.True(t, p.Feedback.Green())
	require.Equal(t, 9, p.PRNumber)
	require.Equal(t, "o/r", p.Repo)

	host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "merged"}})
	ev, err = b.svc.pollPR(ctx, PollPRArgs{TownID: townID, MRBeadID: mr, PRURL: url})
	require.NoError(t, err)
	require.Equal(t, reconciler.EventPRStatusChanged, ev.Type)
	require.Equal(t, "merged", ev.Payload.(reconciler.PRStatusChangedPayload).PRState)

	host.Set(url, codehost.SimPR{Err: &codehost.Error{Kind: codehost.KindHTTPError, HTTPStatus: 503, Transient: true, Msg: "unavailable"}})
	ev, err = b.svc.pollPR(ctx, PollPRArgs{TownID: townID, MRBeadID: mr, PRURL: url})
	require.NoError(t, err)
	f := ev.Payload.(reconciler.PRPollFailedPayload)
	require.Equal(t, "http_error", f.Kind)
	require.True(t, f.Transient)
	require.Equal(t, 503, f.HTTPStatus)

	ev, err = b.svc.pollPR(ctx, PollPRArgs{TownID: townID, MRBeadID: mr, PRURL: "https://example.com/nope"})
	require.NoError(t, err)
	require.Equal(t, "unrecognized_url", ev.Payload.(reconciler.PRPollFailedPayload).Kind)
	require.NoError(t, poll.Work(ctx, job(1, PollPRArgs{TownID: townID, MRBeadID: mr, PRURL: url})))

	// merge_pr: a fresh red check stops the merge; a green PR merges.
	merge := &MergePRWorker{svc: b.svc}
	host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "open", MergeableState: "clean"}, Feedback: reconciler.PRFeedback{AllChecksPass: true, HasUnresolvedComments: true}})
	require.NoError(t, merge.Work(ctx, job(2, MergePRArgs{TownID: townID, MRBeadID: mr, PRURL: url})))
	require.Zero(t, host.Merges())
	host.Set(url, codehost.SimPR{Status: codehost.PRStatus{State: "open", MergeableState: "clean"}, Feedback: reconciler.PRFeedback{AllChecksPass: true}})
	require.NoError(t, merge.Work(ctx, job(3, MergePRArgs{TownID: townID, MRBeadID: mr, PRURL: url})))
	require.Equal(t, 1, host.Merges())
	evs, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	require.Equal(t, []string{"pr_status_changed", "pr_merge_failed", "pr_poll_failed"}, types[:3], "newest first")
}

func TestSendMessageReportsDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, testOpts{})
	ctx := context.Background()
	townID, _ := b.newTown(t)
	w := &SendMessageWorker{svc: b.svc}
	// The simulated agent is not running: delivery fails and is reported as such.
	agentID := db.NewID()
	mail := db.NewEvent{Type: reconciler.EventBeadCreated, BeadID: db.NewID(), Payload: reconciler.BeadCreatedPayload{
		Type: reconciler.BeadMessage, Title: "hi", AssigneeID: agentID, Labels: []string{reconciler.LabelMessage}}}
	_, err := b.svc.Events.Append(ctx, townID, mail)
	require.NoError(t, err)
	_, err = b.tick(ctx, townID)
	require.NoError(t, err)
	require.NoError(t, w.Work(ctx, job(7, SendMessageArgs{TownID: townID, AgentID: agentID, Message: "hi", NudgeID: db.NewID()})))
	sent := job(8, SendMessageArgs{TownID: townID, AgentID: agentID, Message: "hi", MailBeadID: mail.BeadID})
	sent.CreatedAt = time.Now()
	require.NoError(t, w.Work(ctx, sent))
	evs, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Equal(t, "mail_delivery_failed", evs[0].Type)
	require.Equal(t, "nudge_delivery_failed", evs[1].Type)

	// A mail job that waited in the queue while a later tick offered its mail again (no
	// outcome came in time) leaves the mail to that tick's job; so does one whose mail
	// was delivered meanwhile, or deleted.
	_, err = b.store.Pool.Exec(ctx, `UPDATE beads SET metadata = metadata || jsonb_build_object('delivery_requested_at', $3::timestamptz)
		WHERE town_id = $1 AND bead_id = $2`, townID, mail.BeadID, time.Now())
	require.NoError(t, err)
	late := job(9, SendMessageArgs{TownID: townID, AgentID: agentID, Message: "hi", MailBeadID: mail.BeadID})
	late.CreatedAt = time.Now().Add(-3 * time.Minute)
	require.NoError(t, w.Work(ctx, late))
	gone := job(10, SendMessageArgs{TownID: townID, AgentID: agentID, Message: "hi", MailBeadID: db.NewID()})
	gone.CreatedAt = time.Now()
	require.NoError(t, w.Work(ctx, gone))
	after, err := b.store.ListEvents(ctx, townID, "pending", 10)
	require.NoError(t, err)
	require.Len(t, after, len(evs), "superseded mail jobs send and report nothing")
}

// Every side-effect job has its call's bound and the time to report it, whatever the
// tick timeout (River's default job timeout) is: a report never runs on a spent context.
func TestSideEffectJobsOutliveTheirCalls(t *testing.T) {
	t.Parallel()
	svc := &Service{cfg: Config{TickTimeout: time.Second, StartTimeout: 60 * time.Second, CodeHostTimeout: 30 * time.Second}}
	require.Equal(t, 65*time.Second, (&StartAgentWorker{svc: svc}).Timeout(nil))
	require.Equal(t, 35*time.Second, (&PollPRWorker{svc: svc}).Timeout(nil))
	require.Equal(t, 35*time.Second, (&MergePRWorker{svc: svc}).Timeout(nil))
	require.Equal(t, stopTimeout+reportTime, (&StopAgentWorker{svc: svc}).Timeout(nil))
	require.Equal(t, messageTimeout+reportTime, (&SendMessageWorker{svc: svc}).Timeout(nil))
	require.Equal(t, 65*time.Second, svc.cfg.longestJob(), "the rescuer waits past the longest of them")
}
