package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	// sdk: "client" is the tests' *http.Client in this package.
	sdk "github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
)

const tasksUsage = `Usage:
  scalelab tasks ls [flags] [--state S] [--type T] [--queue Q] [--owner O] [--limit N] [--cursor C] [--all] [--json]
                                   list your tasks (everyone's with tasks:admin), newest first, a page
                                   at a time: a table, the totals per state and the next page's cursor
  scalelab tasks get [flags] <id>      print a task's record as JSON
  scalelab tasks cancel [flags] <id>   cancel a queued or running task
  scalelab tasks retry [flags] <id>    queue a failed, dead or cancelled task again, with a fresh
                                       budget of attempts
    These four go over HTTP, through the balancer (--url, SCALELAB_URL), with a token
    (--token, SCALELAB_TOKEN: scalelab token, or the TOKEN scalelab up prints). An error the
    API answers is printed with its code and message, exit 1.

  scalelab tasks dlq ls            list the dead tasks (attempts used up), oldest first
  scalelab tasks dlq retry <id>    queue a dead task again, with a fresh budget of attempts
  scalelab tasks provision [--replicas N] [--max-queue N]
                                   create or update the task streams and bucket (as admin;
                                   gateways and workers wait for them, up does it itself)
    These three go over NATS (--nats, SCALELAB_NATS_URL, and the operator's NATS user).
`

// runTasks is the operator's view of the task pipeline.
func runTasks(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "ls", "get", "cancel", "retry":
			return runTasksAPI(ctx, args[0], args[1:], getenv, stdout, stderr)
		}
	}
	fs, s := newFlags("scalelab tasks", tasksUsage, getenv, stderr)
	var c common
	c.register(s, true)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	rest := fs.Args()
	var retryID string
	var provision *task.ProvisionConfig
	switch {
	case len(rest) >= 1 && rest[0] == "provision":
		// Its own flags, after the word: they size what it creates.
		pfs, ps := newFlags("scalelab tasks provision", "", getenv, stderr)
		p := task.DefaultProvisionConfig()
		p.RegisterFlags(ps)
		if help, err := parseFlags(pfs, rest[1:]); help || err != nil {
			return err
		}
		if err := errors.Join(ps.Err(), p.Validate("tasks provision")); err != nil {
			return usageErr(err)
		}
		if pfs.NArg() > 0 {
			return usageErr(fmt.Errorf("tasks provision: unexpected arguments %q", pfs.Args()))
		}
		provision = &p
	case len(rest) == 2 && rest[0] == "dlq" && rest[1] == "ls":
	case len(rest) == 3 && rest[0] == "dlq" && rest[1] == "retry":
		retryID = rest[2]
		if !task.ValidID(retryID) {
			return usageErr(fmt.Errorf("tasks: %q is not a task id", retryID))
		}
	default:
		fmt.Fprint(stderr, tasksUsage)
		return usageErr(fmt.Errorf("tasks: unknown subcommand %q", rest))
	}
	if !flagSet(fs, "log-level") && getenv("SCALELAB_LOG_LEVEL") == "" {
		c.LogLevel = "warn" // an operator command: print results, not connection chatter
	}
	log, err := c.logger(stderr)
	if err != nil {
		return usageErr(err)
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	// An operator command: fail fast rather than wait for NATS forever.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts, err := c.natsOptions(getenv, "scalelab-tasks")
	if err != nil {
		return err
	}
	nc, err := natsconn.Connect(ctx, opts, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("tasks: jetstream: %w", err)
	}
	if provision != nil {
		if _, err := task.Provision(ctx, js, *provision); err != nil {
			return fmt.Errorf("tasks: %w", err)
		}
		fmt.Fprintf(stdout, "task streams %s, %s, %s and bucket %s provisioned (replicas %d)\n",
			task.DelayedStream, task.Stream, task.DLQStream, task.Bucket, provision.Replicas)
		return nil
	}
	if retryID != "" {
		kv, err := js.KeyValue(ctx, task.Bucket)
		if err != nil {
			return fmt.Errorf("tasks: open bucket %s: %w", task.Bucket, err)
		}
		if err := task.RetryDead(ctx, js, task.NewStore(kv), retryID); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "task %s queued again\n", retryID)
		return nil
	}
	dead, err := task.ListDead(ctx, js)
	if err != nil {
		return err
	}
	if len(dead) == 0 {
		fmt.Fprintln(stdout, "no dead tasks")
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTYPE\tOWNER\tATTEMPTS\tDIED\tLAST ERROR")
	for _, d := range dead {
		owner := d.Owner
		if owner == "" {
			owner = "-" // not carried by the message, or a task from before owners
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Type, owner, d.Attempts, d.DiedAt.UTC().Format(time.RFC3339), d.Error)
	}
	return w.Flush()
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// listStates are the states a task list counts, in the order of a task's
// life; "all" is their sum.
var listStates = []sdk.State{sdk.Queued, sdk.Running, sdk.Succeeded, sdk.Failed, sdk.Dead, sdk.Cancelled}

// runTasksAPI is `scalelab tasks ls|get|cancel|retry`: the task routes of
// the HTTP API through the balancer, with the client package, so a user
// needs a token, not NATS credentials, and sees what the API lets the
// token see (its own tasks, or every task with tasks:admin).
func runTasksAPI(ctx context.Context, sub string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, s := newFlags("scalelab tasks "+sub, tasksUsage, getenv, stderr)
	var base, token, state, typ, queue, owner, cursor string
	var limit int
	var all, asJSON bool
	var timeout time.Duration
	s.String(&base, "url", "SCALELAB_URL", "http://127.0.0.1:8000", "the balancer (or a gateway)")
	s.String(&token, "token", "SCALELAB_TOKEN", "", "a bearer token (scalelab token, or the TOKEN scalelab up prints)")
	s.Duration(&timeout, "timeout", "", 30*time.Second, "time limit of each request")
	if sub == "ls" {
		fs.StringVar(&state, "state", "", "only tasks in this state: queued, running, succeeded, failed, dead or cancelled")
		fs.StringVar(&typ, "type", "", "only tasks of this registered type")
		fs.StringVar(&queue, "queue", "", "only tasks on this registered queue")
		fs.StringVar(&owner, "owner", "", "only this owner's tasks (needs tasks:admin)")
		fs.IntVar(&limit, "limit", 0, "tasks per page, 1 to 200 (default 50; 200 with --all)")
		fs.StringVar(&cursor, "cursor", "", "start at this page: the cursor the page before printed")
		fs.BoolVar(&all, "all", false, "follow the cursors to the last page and print every task")
		fs.BoolVar(&asJSON, "json", false, "print the page as JSON, as GET /tasks answers it (with --all: one page of every task)")
	}
	rest, help, err := parseInterspersed(fs, args)
	if help || err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr(fmt.Errorf("tasks %s: --url %q is not an http(s) URL", sub, base))
	}
	if token == "" {
		return usageErr(fmt.Errorf("tasks %s: no token: give --token or set SCALELAB_TOKEN (scalelab token, or the TOKEN scalelab up prints)", sub))
	}
	c := sdk.New(base, token, sdk.WithHTTPClient(&http.Client{Timeout: timeout}))
	if sub == "ls" {
		if len(rest) != 0 {
			return usageErr(fmt.Errorf("tasks ls: unexpected arguments %q", rest))
		}
		if state != "" && !slices.Contains(listStates, sdk.State(state)) {
			return usageErr(fmt.Errorf("tasks ls: --state %q: want queued, running, succeeded, failed, dead or cancelled", state))
		}
		if limit < 0 {
			return usageErr(fmt.Errorf("tasks ls: --limit must not be negative, got %d", limit))
		}
		if all && limit == 0 {
			limit = 200 // the most a page holds: fewest requests
		}
		opts := sdk.ListOptions{State: sdk.State(state), Type: typ, Queue: queue, Owner: owner, Limit: limit, Cursor: cursor}
		return tasksList(ctx, c, opts, all, asJSON, stdout)
	}
	if len(rest) != 1 {
		return usageErr(fmt.Errorf("tasks %s: want one task id, got %d arguments", sub, len(rest)))
	}
	id := rest[0]
	if !task.ValidID(id) {
		return usageErr(fmt.Errorf("tasks %s: %q is not a task id", sub, id))
	}
	var t *sdk.Task
	switch sub {
	case "get":
		t, err = c.Get(ctx, id)
	case "cancel":
		t, err = c.Cancel(ctx, id)
	default: // retry
		t, err = c.Retry(ctx, id)
	}
	if err != nil {
		return apiErr("tasks "+sub+" "+id, err)
	}
	switch sub {
	case "get":
		return printJSON(stdout, t)
	case "cancel":
		fmt.Fprintf(stdout, "task %s %s\n", t.ID, t.State)
	default:
		fmt.Fprintf(stdout, "task %s %s again (generation %d)\n", t.ID, t.State, t.Generation)
	}
	return nil
}

// apiError is an error the API answered, as the task commands print it:
// what was asked, the API's code and message, the HTTP status. It
// unwraps to the *sdk.Error.
type apiError struct {
	what string
	err  *sdk.Error
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s: %s: %s (HTTP %d)", e.what, e.err.Code, e.err.Message, e.err.Status)
}

func (e *apiError) Unwrap() error { return e.err }

// apiErr is err of the request what: an *apiError when the API answered
// it, else err (no answer: a refused connection, a timeout) wrapped.
func apiErr(what string, err error) error {
	var e *sdk.Error
	if errors.As(err, &e) {
		return &apiError{what: what, err: e}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// parseInterspersed parses args on fs, allowing flags after the
// positional arguments too (`tasks get <id> --url U`), which the flag
// package alone stops at, and returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) (positional []string, help bool, err error) {
	for {
		if help, err := parseFlags(fs, args); help || err != nil {
			return nil, help, err
		}
		if fs.NArg() == 0 {
			return positional, false, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// tasksList prints the page of GET /tasks that opts ask for (every page
// from there with all): a table, the totals and the next page's cursor,
// or, asJSON, the page as the API answers it.
func tasksList(ctx context.Context, c *sdk.HTTPClient, opts sdk.ListOptions, all, asJSON bool, stdout io.Writer) error {
	page, err := c.List(ctx, opts)
	if err != nil {
		return apiErr("tasks ls", err)
	}
	for all && page.NextCursor != "" {
		opts.Cursor = page.NextCursor
		next, err := c.List(ctx, opts)
		if err != nil {
			return apiErr(fmt.Sprintf("tasks ls: the page after %d tasks", len(page.Tasks)), err)
		}
		// The first page's totals stand: they count the same tasks.
		page.Tasks, page.NextCursor = append(page.Tasks, next.Tasks...), next.NextCursor
	}
	if asJSON {
		return printJSON(stdout, page)
	}
	now := time.Now()
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTYPE\tQUEUE\tSTATE\tATTEMPTS\tPROGRESS\tAGE\tERROR")
	for _, t := range page.Tasks {
		attempts := strconv.Itoa(t.Attempts)
		if t.MaxAttempts > 0 {
			attempts += "/" + strconv.Itoa(t.MaxAttempts)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d%%\t%s\t%s\n", t.ID, t.Type, orDash(t.Queue), t.State, attempts,
			t.Progress, age(now.Sub(t.CreatedAt)), orDash(truncate(t.Error, 60)))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var totals []string
	for _, st := range listStates {
		totals = append(totals, fmt.Sprintf("%s %d", st, page.Totals[st]))
	}
	fmt.Fprintf(stdout, "%d tasks shown; totals: %s; all %d\n", len(page.Tasks), strings.Join(totals, ", "), page.Totals["all"])
	if page.NextCursor != "" {
		fmt.Fprintf(stdout, "next page: --cursor %s\n", page.NextCursor)
	}
	return nil
}

// printJSON prints v as indented JSON.
func printJSON(stdout io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// age is d in one unit, as a list column shows it: 45s, 12m, 5h, 3d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(max(d, 0)/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

// truncate is the first line of s, cut to n runes with an ellipsis: a
// task's error can be 256 bytes over several lines, too long for a row.
func truncate(s string, n int) string {
	s, _, cut := strings.Cut(s, "\n")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	if cut {
		return s + "…"
	}
	return s
}
