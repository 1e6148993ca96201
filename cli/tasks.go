package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
)

const tasksUsage = `Usage:
  scalelab tasks dlq ls            list the dead tasks (attempts used up), oldest first
  scalelab tasks dlq retry <id>    queue a dead task again, with a fresh budget of attempts
  scalelab tasks provision [--replicas N] [--max-queue N]
                                   create or update the task streams and bucket (as admin;
                                   gateways and workers wait for them, up does it itself)
`

// runTasks is the operator's view of the task pipeline.
func runTasks(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
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
