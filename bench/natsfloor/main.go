// Command natsfloor measures the floor of scalelab's task pipeline on this
// machine: what its JetStream writes and NATS messages alone cost per
// task, with no HTTP, no balancer, no gateway, no worker logic and no JSON
// encoding (the record and the message are prebuilt byte slices). It is not
// part of scalelab: it is the ceiling analysis of issue #29's tasks goal
// (bench/tasks/README.md, "The per-task budget").
//
// One process, as `up`: an embedded NATS server (JetStream on disk, in a
// temporary directory) reached over in-process connections, the TASKS
// stream and the tasks bucket provisioned by task.Provision, as `up` does,
// and a pull consumer configured as a worker's. C submitters and S slots
// (a worker's task slots) move N tasks through one design at a time, and
// the run reports tasks/s and the process's CPU time per task (getrusage:
// server and clients together, as `up`'s CPU counts both).
//
//	go run ./bench/natsfloor                    # every design, 3 rounds
//	go run ./bench/natsfloor -design today -n 50000
//
// The designs, from today's to the fewest writes:
//
//	today       submit: KV create (record queued) + publish (the message);
//	            run: pull + KV update (running) + KV update (succeeded) + ack.
//	            5 stored writes, 11 NATS messages a task: the pipeline of
//	            gateway/submit.go and worker/ as they are.
//	no-running  as today without the running update: 4 writes, 9 messages.
//	message     the message is the queued record (no KV write at submit);
//	            run: pull + KV create (succeeded) + ack: 3 writes, 7 messages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/natsconf"
)

// revHeader carries the record's revision in a task message.
const revHeader = "Natsfloor-Rev"

// designs are the pipelines natsfloor knows, in the order it runs them.
var designs = []string{"today", "no-running", "message"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "natsfloor:", err)
		os.Exit(1)
	}
}

// options are natsfloor's flags.
type options struct {
	n, submitters, slots, rounds int
	designs                      []string
	recordBytes                  int
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("natsfloor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	design := fs.String("design", "all", "which pipeline: "+strings.Join(designs, ", ")+" or all")
	fs.IntVar(&o.n, "n", 20000, "tasks per run")
	fs.IntVar(&o.submitters, "c", 32, "submissions in flight at once (bench/tasks/run.sh's C)")
	fs.IntVar(&o.slots, "slots", 8, "task slots (2 workers × 4 in bench/tasks/run.sh)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every design once, in a rotating order")
	fs.IntVar(&o.recordBytes, "record-bytes", 330, "bytes of a task record (a noop task's is about 330)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *design == "all":
		o.designs = designs
	case slices.Contains(designs, *design):
		o.designs = []string{*design}
	default:
		return fmt.Errorf("-design %q: want one of %s or all", *design, strings.Join(designs, ", "))
	}
	if o.n < 1 || o.submitters < 1 || o.slots < 1 || o.rounds < 1 || o.recordBytes < 1 {
		return errors.New("-n, -c, -slots, -rounds and -record-bytes must be positive")
	}
	fmt.Fprintf(stdout, "natsfloor: %d tasks a run, %d submitters, %d slots, %d rounds, %d-byte records\n",
		o.n, o.submitters, o.slots, o.rounds, o.recordBytes)
	results := map[string][]result{}
	for round := range o.rounds {
		for i := range o.designs {
			d := o.designs[(i+round)%len(o.designs)]
			r, err := runDesign(ctx, d, o)
			if err != nil {
				return fmt.Errorf("%s: %w", d, err)
			}
			results[d] = append(results[d], r)
			fmt.Fprintf(stdout, "  round %d %-10s %8.0f tasks/s %7.1f µs CPU a task %5.1f NATS messages a task\n",
				round+1, d, r.tasksPerSec, r.cpuPerTask, r.msgsPerTask)
		}
	}
	fmt.Fprintf(stdout, "\n| design | stored writes a task | tasks/s (median) | CPU µs a task (median) | NATS messages a task |\n|---|--:|--:|--:|--:|\n")
	for _, d := range o.designs {
		rs := results[d]
		fmt.Fprintf(stdout, "| %s | %d | %.0f | %.1f | %.1f |\n", d, writesOf(d),
			median(rs, func(r result) float64 { return r.tasksPerSec }),
			median(rs, func(r result) float64 { return r.cpuPerTask }),
			median(rs, func(r result) float64 { return r.msgsPerTask }))
	}
	return nil
}

// writesOf is how many stored writes (JetStream messages, acks) design
// makes a task.
func writesOf(design string) int {
	switch design {
	case "today":
		return 5
	case "no-running":
		return 4
	}
	return 3
}

// result is one run of one design.
type result struct {
	tasksPerSec, cpuPerTask, msgsPerTask float64
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// runDesign moves o.n tasks through design on a fresh server and store.
func runDesign(ctx context.Context, design string, o options) (result, error) {
	dir, err := os.MkdirTemp("", "natsfloor-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.DiscardHandler)
	ns, err := natsconf.StartEmbedded(natsconf.Embedded{Host: "127.0.0.1", Port: -1, StoreDir: dir}, quiet)
	if err != nil {
		return result{}, err
	}
	defer ns.Shutdown()
	// One connection per role, as `up` gives its gateway and its workers.
	gw, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		return result{}, err
	}
	defer gw.Close()
	wk, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
	if err != nil {
		return result{}, err
	}
	defer wk.Close()
	gjs, err := jetstream.New(gw)
	if err != nil {
		return result{}, err
	}
	wjs, err := jetstream.New(wk)
	if err != nil {
		return result{}, err
	}
	if _, err := task.Provision(ctx, gjs, task.DefaultProvisionConfig()); err != nil {
		return result{}, err
	}
	gkv, err := gjs.KeyValue(ctx, task.Bucket)
	if err != nil {
		return result{}, err
	}
	wkv, err := wjs.KeyValue(ctx, task.Bucket)
	if err != nil {
		return result{}, err
	}
	cons, err := wjs.CreateOrUpdateConsumer(ctx, task.Stream, jetstream.ConsumerConfig{
		Durable: task.QueueConsumer(task.DefaultQueue), FilterSubjects: task.QueueSubjects(task.DefaultQueue),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 10_000,
	})
	if err != nil {
		return result{}, err
	}
	rec := []byte(`{"state":"queued","payload":"` + strings.Repeat("x", max(0, o.recordBytes-30)) + `"}`)
	subject := task.Subject(task.DefaultQueue, "noop")

	msgs0 := clientMsgs(ns)
	cpu0 := cpuTime()
	start := time.Now()
	var done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.submitters+o.slots)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// fail records err and stops every goroutine: the slots would wait for
	// tasks a failed submitter never sends.
	fail := func(err error) {
		errc <- err
		cancel()
	}
	var next atomic.Int64
	for range o.submitters {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(o.n); i = next.Add(1) {
				id := fmt.Sprintf("t%09d", i)
				msg := nats.NewMsg(subject)
				msg.Data = rec
				msg.Header.Set(jetstream.MsgIDHeader, id)
				if design != "message" {
					rev, err := gkv.Create(ctx, id, rec)
					if err != nil {
						fail(fmt.Errorf("create: %w", err))
						return
					}
					// The message carries the record's revision, as
					// task.Envelope does, so the slot writes without a read.
					msg.Header.Set(revHeader, strconv.FormatUint(rev, 10))
				}
				if _, err := gjs.PublishMsg(ctx, msg); err != nil {
					fail(fmt.Errorf("publish: %w", err))
					return
				}
			}
		})
	}
	for range o.slots {
		wg.Go(func() {
			for done.Load() < int64(o.n) && ctx.Err() == nil {
				msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
				if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) {
					continue
				}
				if err != nil {
					fail(fmt.Errorf("next: %w", err))
					return
				}
				id := msg.Headers().Get(jetstream.MsgIDHeader)
				rev, _ := strconv.ParseUint(msg.Headers().Get(revHeader), 10, 64)
				if err := settle(ctx, design, wkv, id, rev, rec); err != nil {
					fail(err)
					return
				}
				if err := msg.Ack(); err != nil {
					fail(fmt.Errorf("ack: %w", err))
					return
				}
				if done.Add(1) == int64(o.n) {
					cancel() // wakes the slots waiting on an empty queue
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errc:
		return result{}, err
	default:
	}
	if n := done.Load(); n != int64(o.n) {
		return result{}, fmt.Errorf("%d of %d tasks ran", n, o.n)
	}
	cpu := cpuTime() - cpu0
	return result{
		tasksPerSec: float64(o.n) / elapsed.Seconds(),
		cpuPerTask:  float64(cpu.Microseconds()) / float64(o.n),
		msgsPerTask: float64(clientMsgs(ns)-msgs0) / float64(o.n),
	}, nil
}

// settle writes what a slot writes for one task of design before its ack.
// rev is the revision the submitter's create returned.
func settle(ctx context.Context, design string, kv jetstream.KeyValue, id string, rev uint64, rec []byte) error {
	if design == "message" {
		_, err := kv.Create(ctx, id, rec)
		return err
	}
	var err error
	if design == "today" {
		if rev, err = kv.Update(ctx, id, rec, rev); err != nil {
			return fmt.Errorf("update running: %w", err)
		}
	}
	if _, err := kv.Update(ctx, id, rec, rev); err != nil {
		return fmt.Errorf("update succeeded: %w", err)
	}
	return nil
}

// clientMsgs is the messages the server's clients sent and received so
// far, as bench/tasks counts them (/varz in_msgs + out_msgs of clients).
func clientMsgs(ns *server.Server) int64 {
	v, err := ns.Varz(nil)
	if err != nil {
		return 0
	}
	return v.InClientMsgs + v.OutClientMsgs
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
