package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

const schedulesUsage = `Usage:
  scalelab schedules ls [flags]                       list your schedules (all of them with tasks:admin)
  scalelab schedules add [flags] (--cron EXPR | --every DUR) [--time-zone Z] [--queue Q] TASK
                                                      add a schedule; TASK is a /longtask body,
                                                      e.g. '{"task":"report"}'
  scalelab schedules rm [flags] <id>                  delete a schedule: no tick after it
Over HTTP, through the balancer, with a token (scalelab token --scope tasks:read,tasks:write).
Cron takes 6 fields with seconds ("0 */5 * * * *") or @hourly, @daily, @weekly, @monthly, @yearly.
`

// schedule is a schedule as the gateway answers it.
type schedule struct {
	ID        string          `json:"id"`
	Owner     string          `json:"owner"`
	Spec      string          `json:"spec"`
	TimeZone  string          `json:"time_zone"`
	Task      json.RawMessage `json:"task"`
	Queue     string          `json:"queue"`
	CreatedAt time.Time       `json:"created_at"`
	NextRun   *time.Time      `json:"next_run"`
}

// runSchedules is `scalelab schedules ls|add|rm`: the /schedules routes
// over HTTP.
func runSchedules(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "ls" && args[0] != "add" && args[0] != "rm") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, schedulesUsage)
			return nil
		}
		fmt.Fprint(stderr, schedulesUsage)
		return usageErr(fmt.Errorf("schedules: want ls, add or rm, got %q", args))
	}
	sub := args[0]
	fs, s := newFlags("scalelab schedules "+sub, schedulesUsage, getenv, stderr)
	var base, token, cron, every, zone, queue string
	var timeout time.Duration
	s.String(&base, "url", "SCALELAB_URL", "http://localhost:8000", "the balancer (or a gateway)")
	s.String(&token, "token", "SCALELAB_TOKEN", "", "a bearer token (scalelab token)")
	s.Duration(&timeout, "timeout", "", 10*time.Second, "time limit of the request")
	if sub == "add" {
		fs.StringVar(&cron, "cron", "", `a cron expression with seconds, "0 */5 * * * *", or @hourly, @daily…`)
		fs.StringVar(&every, "every", "", `an interval, "30s", at least 1s`)
		fs.StringVar(&zone, "time-zone", "", "the IANA zone a cron expression is read in (default UTC)")
		fs.StringVar(&queue, "queue", "", "the queue of the tasks (default: the task's, else the type's)")
	}
	if help, err := parseFlags(fs, args[1:]); help || err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr(fmt.Errorf("schedules: --url %q is not an http(s) URL", base))
	}
	if token == "" {
		return usageErr(errors.New("schedules: no token: give --token or SCALELAB_TOKEN (scalelab token --scope tasks:read,tasks:write)"))
	}
	c := apiClient{base: strings.TrimSuffix(base, "/"), token: token, client: &http.Client{Timeout: timeout}}
	switch sub {
	case "ls":
		if fs.NArg() != 0 {
			return usageErr(fmt.Errorf("schedules ls: unexpected arguments %q", fs.Args()))
		}
		var out struct {
			Schedules []schedule `json:"schedules"`
		}
		if err := c.do(ctx, http.MethodGet, "/schedules", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSPEC\tZONE\tQUEUE\tNEXT RUN\tOWNER\tTASK")
		for _, sc := range out.Schedules {
			next := "-"
			if sc.NextRun != nil {
				next = sc.NextRun.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sc.ID, sc.Spec, orDash(sc.TimeZone), orDash(sc.Queue), next, sc.Owner, sc.Task)
		}
		return tw.Flush()
	case "add":
		if fs.NArg() != 1 {
			return usageErr(fmt.Errorf("schedules add: want one TASK body such as '{\"task\":\"report\"}', got %d arguments", fs.NArg()))
		}
		if (cron == "") == (every == "") {
			return usageErr(errors.New("schedules add: give exactly one of --cron and --every"))
		}
		body := map[string]any{"task": json.RawMessage(fs.Arg(0))}
		if !json.Valid([]byte(fs.Arg(0))) {
			return usageErr(fmt.Errorf("schedules add: TASK %q is not JSON", fs.Arg(0)))
		}
		if cron != "" {
			body["cron"] = cron
		} else {
			body["every"] = every
		}
		if zone != "" {
			body["time_zone"] = zone
		}
		if queue != "" {
			body["queue"] = queue
		}
		var sc schedule
		if err := c.do(ctx, http.MethodPost, "/schedules", body, &sc); err != nil {
			return err
		}
		next := "unknown"
		if sc.NextRun != nil {
			next = sc.NextRun.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "%s\t%s\tnext run %s\n", sc.ID, sc.Spec, next)
		return nil
	default: // rm
		if fs.NArg() != 1 {
			return usageErr(fmt.Errorf("schedules rm: want one schedule id, got %d arguments", fs.NArg()))
		}
		if err := c.do(ctx, http.MethodDelete, "/schedules/"+url.PathEscape(fs.Arg(0)), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", fs.Arg(0))
		return nil
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// apiClient calls the HTTP API with a bearer token.
type apiClient struct {
	base, token string
	client      *http.Client
}

// do sends body (JSON, when not nil) and decodes a 2xx answer into out
// (when not nil). Another status is an error carrying the API's message.
func (c apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, e.Error.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, res.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
		}
	}
	return nil
}
