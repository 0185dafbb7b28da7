package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"gastown/db"
)

// apiClient is the operator's view of a running gastown API.
type apiClient struct {
	url   string
	token string
	http  *http.Client
}

type opsFlags struct {
	url, token string
	asJSON     bool
}

func bindOps(cmd *cobra.Command, f *opsFlags) {
	cmd.Flags().StringVar(&f.url, "url", envString("GASTOWN_URL", "http://127.0.0.1:8080"), "base URL of the gastown API (env GASTOWN_URL)")
	cmd.Flags().StringVar(&f.token, "admin-token", envString("ADMIN_TOKEN", ""), "admin token (env ADMIN_TOKEN)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the API's JSON instead of a table")
	hideSecrets(cmd.Flags(), "admin-token", "url")
}

func (f *opsFlags) client() (*apiClient, error) {
	if f.token == "" {
		return nil, errors.New("set ADMIN_TOKEN (or --admin-token) to the API's admin token")
	}
	if u, err := url.Parse(f.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("GASTOWN_URL (or --url) must look like http://host:port, not %q", f.url)
	}
	return &apiClient{url: strings.TrimRight(f.url, "/"), token: f.token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// townArg is the TOWN argument of the operator commands: exactly one town id.
func townArg(_ *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return errors.New("name a town id (`gastown towns` lists them)")
	case len(args) > 1:
		return fmt.Errorf("name one town id, not %d arguments", len(args))
	case !db.IsID(args[0]):
		return fmt.Errorf("%q is not a town id (a UUID; `gastown towns` lists them)", args[0])
	}
	return nil
}

// call sends a request and decodes the JSON answer; a 4xx/5xx becomes an error with the
// API's message.
func (c *apiClient) call(ctx context.Context, method, path string, body any) (map[string]any, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach the gastown API at %s (is `gastown serve` running? set GASTOWN_URL): %w", c.url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil, raw, fmt.Errorf("the API answered %s with something that is not JSON", resp.Status)
		}
	}
	if resp.StatusCode >= 400 {
		msg, _ := out["error"].(string)
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			msg += "; ADMIN_TOKEN must be one of the API's admin tokens (its ADMIN_TOKEN / --admin-token)"
		case http.StatusNotFound:
			if msg == "not found" {
				msg = "no such town (`gastown towns` lists them)"
			}
		}
		return out, raw, fmt.Errorf("%s %s: %s (%s)", method, path, msg, resp.Status)
	}
	return out, raw, nil
}

func newOpsCommands() []*cobra.Command {
	var f opsFlags
	towns := &cobra.Command{
		Use:   "towns",
		Short: "List the towns of a running gastown",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			out, raw, err := c.call(cmd.Context(), http.MethodGet, "/v1/towns?limit=1000", nil)
			if err != nil || f.asJSON {
				return printRaw(cmd, raw, err)
			}
			w := table(cmd, "TOWN", "NAME", "TICKS", "LAST TICK", "NEXT TICK", "DRAINING")
			for _, t := range list(out, "towns") {
				fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%v\n", t["town_id"], t["name"], t["tick_count"], ago(t["last_tick_at"]), ago(t["next_tick_at"]), t["draining"])
			}
			return w.Flush()
		},
	}
	bindOps(towns, &f)

	var fs opsFlags
	status := &cobra.Command{
		Use:   "status TOWN",
		Short: "Show a town at a glance: cadence, agents, beads, last tick",
		Args:  townArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fs.client()
			if err != nil {
				return err
			}
			out, raw, err := c.call(cmd.Context(), http.MethodGet, "/debug/towns/"+args[0]+"/status", nil)
			if err != nil || fs.asJSON {
				return printRaw(cmd, raw, err)
			}
			a, _ := out["alarmStatus"].(map[string]any)
			alarm, _ := a["alarm"].(map[string]any)
			p := cmd.OutOrStdout()
			fmt.Fprintf(p, "cadence   %v, next tick %s\n", alarm["intervalLabel"], ago(alarm["nextFireAt"]))
			fmt.Fprintf(p, "agents    %s\n", counts(a["agents"]))
			fmt.Fprintf(p, "beads     %s\n", counts(a["beads"]))
			fmt.Fprintf(p, "patrol    %s\n", counts(a["patrol"]))
			fmt.Fprintf(p, "pending   %v events\n", a["pendingEventCount"])
			if r, ok := a["reconciler"].(map[string]any); ok {
				fmt.Fprintf(p, "last tick %v ms, %v events drained, %v actions (%v skipped), %v violations\n",
					r["wallClockMs"], r["eventsDrained"], r["actionsEmitted"], r["actionsSkipped"], r["invariantViolations"])
			}
			fmt.Fprintln(p)
			w := table(cmd, "AGENT", "ROLE", "STATUS", "HOOK", "ATTEMPTS", "LAST ACTIVITY")
			for _, ag := range list(out, "agentMeta") {
				fmt.Fprintf(w, "%v\t%v\t%v\t%v\t%v\t%s\n", ag["name"], ag["role"], ag["status"], orDash(ag["current_hook_bead_id"]), ag["dispatch_attempts"], ago(ag["last_activity_at"]))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(p)
			w = table(cmd, "BEAD", "TYPE", "STATUS", "TITLE")
			for _, b := range list(out, "beadSummary") {
				fmt.Fprintf(w, "%v\t%v\t%v\t%.50v\n", b["bead_id"], b["type"], b["status"], b["title"])
			}
			return w.Flush()
		},
	}
	bindOps(status, &fs)

	var fd opsFlags
	dryRun := &cobra.Command{
		Use:   "dry-run TOWN",
		Short: "Show what the town's next tick would do (computed and rolled back)",
		Args:  townArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fd.client()
			if err != nil {
				return err
			}
			out, raw, err := c.call(cmd.Context(), http.MethodPost, "/debug/towns/"+args[0]+"/reconcile-dry-run", nil)
			if err != nil || fd.asJSON {
				return printRaw(cmd, raw, err)
			}
			m, _ := out["metrics"].(map[string]any)
			fmt.Fprintf(cmd.OutOrStdout(), "%v events would drain, %v actions, %v pending after\n\n", m["eventsDrained"], m["actionsEmitted"], m["pendingEventCount"])
			return printActions(cmd, list(out, "actions"))
		},
	}
	bindOps(dryRun, &fd)

	var fr opsFlags
	var (
		from, to         string
		faithful         bool
		fromTick, toTick int64
		whatIf           string
	)
	replay := &cobra.Command{
		Use:   "replay TOWN [--from TIME --to TIME | --faithful [--from-tick N] [--to-tick N] [--what-if-config JSON]]",
		Short: "Replay a town's history, rolled back: reference-style on the current state, or --faithful from a checkpoint",
		Long: "Without --faithful, replay re-applies a window of events on the CURRENT state (the\n" +
			"reference's approximate replay). With --faithful it restores the latest checkpoint before\n" +
			"the window and re-runs the recorded ticks, reporting for each whether its actions and\n" +
			"state hash reproduce, and the first divergence with a diff. --what-if-config replays with\n" +
			"another town config (e.g. '{\"max_dispatch_attempts\": 1}') and shows how actions differ.",
		Args: townArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := fr.client()
			if err != nil {
				return err
			}
			ticks := cmd.Flags().Changed("from-tick") || cmd.Flags().Changed("to-tick")
			switch {
			case !faithful && (ticks || whatIf != ""):
				return errors.New("--from-tick, --to-tick and --what-if-config need --faithful")
			case !faithful && (from == "" || to == ""):
				return errors.New("give the window with --from and --to (RFC 3339), or replay --faithful")
			case ticks && (from != "" || to != ""):
				return errors.New("give a window either as times (--from, --to) or as ticks (--from-tick, --to-tick), not both")
			}
			if faithful {
				return replayFaithfulCmd(cmd, c, &fr, args[0], from, to, fromTick, toTick, whatIf)
			}
			out, raw, err := c.call(cmd.Context(), http.MethodPost, "/debug/towns/"+args[0]+"/replay-events", map[string]string{"from": from, "to": to})
			if err != nil || fr.asJSON {
				return printRaw(cmd, raw, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%v events replayed\nnote: %v\n\n", out["eventsReplayed"], out["caveat"])
			return printActions(cmd, list(out, "actions"))
		},
	}
	bindOps(replay, &fr)
	replay.Flags().StringVar(&from, "from", "", "start of the window (RFC 3339)")
	replay.Flags().StringVar(&to, "to", "", "end of the window (RFC 3339)")
	replay.Flags().BoolVar(&faithful, "faithful", false, "re-run the recorded ticks from a checkpoint and compare (exact)")
	replay.Flags().Int64Var(&fromTick, "from-tick", 0, "with --faithful: the first tick to report")
	replay.Flags().Int64Var(&toTick, "to-tick", 0, "with --faithful: the last tick to report (0: the last recorded)")
	replay.Flags().StringVar(&whatIf, "what-if-config", "", "with --faithful: a town config (JSON) to replay with instead")
	return []*cobra.Command{towns, status, dryRun, replay}
}

func printRaw(cmd *cobra.Command, raw []byte, err error) error {
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if json.Indent(&buf, raw, "", "  ") == nil {
		raw = buf.Bytes()
	}
	_, err = fmt.Fprintln(cmd.OutOrStdout(), string(raw))
	return err
}

func printActions(cmd *cobra.Command, actions []map[string]any) error {
	w := table(cmd, "#", "ACTION", "FIELDS")
	for i, a := range actions {
		fields, _ := json.Marshal(a["fields"])
		fmt.Fprintf(w, "%d\t%v\t%s\n", i+1, a["type"], fields)
	}
	return w.Flush()
}

func table(cmd *cobra.Command, cols ...string) *tabwriter.Writer {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(cols, "\t"))
	return w
}

func list(out map[string]any, key string) []map[string]any {
	raw, _ := out[key].([]any)
	res := make([]map[string]any, 0, len(raw))
	for _, r := range raw {
		if m, ok := r.(map[string]any); ok {
			res = append(res, m)
		}
	}
	return res
}

func counts(v any) string {
	m, _ := v.(map[string]any)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func orDash(v any) any {
	if v == nil {
		return "-"
	}
	return v
}

// ago renders an RFC 3339 time relative to now.
func ago(v any) string {
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return "-"
	}
	d := time.Until(t).Round(time.Second)
	if d >= 0 {
		return "in " + d.String()
	}
	return (-d).String() + " ago"
}

// replayFaithfulCmd asks the API for a faithful (or what-if) replay and summarises it.
func replayFaithfulCmd(cmd *cobra.Command, c *apiClient, f *opsFlags, town, from, to string, fromTick, toTick int64, whatIf string) error {
	body := map[string]any{"mode": "faithful", "from": from, "to": to, "from_tick": fromTick, "to_tick": toTick, "ticks": "divergent"}
	if whatIf != "" {
		var cfg map[string]any
		if err := json.Unmarshal([]byte(whatIf), &cfg); err != nil || cfg == nil {
			return fmt.Errorf(`--what-if-config must be a JSON object, e.g. '{"max_dispatch_attempts": 1}'`)
		}
		body["config"] = cfg
	}
	out, raw, err := c.call(cmd.Context(), http.MethodPost, "/debug/towns/"+town+"/replay-events", body)
	if err != nil || f.asJSON {
		return printRaw(cmd, raw, err)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "%s replay: %v ticks re-run from the checkpoint of tick %v (ticks %v..%v reported)\n",
		out["mode"], out["ticks_replayed"], out["checkpoint_tick_id"], out["from_tick_id"], out["to_tick_id"])
	d, _ := out["first_divergence"].(map[string]any)
	if d == nil {
		fmt.Fprintln(w, "every tick reproduced its recorded actions and state")
		return nil
	}
	fmt.Fprintf(w, "first divergence at tick %v (clock %v):\n%s\n", d["tick_id"], d["clock_at"], indent(fmt.Sprint(d["diff"])))
	return nil
}
