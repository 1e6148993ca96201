// Command rawworker serves the task type "reverse" with nothing but
// nats.go and its jetstream package, by following docs/TASKS-WIRE.md:
// it imports no scalelab package, so it is what a worker in another
// language does, step by step. Use the Go worker SDK (examples/wordcount)
// for real Go workers.
//
// Environment: SCALELAB_NATS_URL (default nats://127.0.0.1:4222),
// SCALELAB_NATS_USER (default worker) and SCALELAB_NATS_PASSWORD.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rawworker:", err)
		os.Exit(1)
	}
}

// The names of docs/TASKS-WIRE.md.
const (
	tasksStream    = "TASKS"
	tasksBucket    = "tasks"
	registryBucket = "task_registry"
	workersBucket  = "task_workers"
	dlqStream      = "TASKS_DLQ"
	cancelSubjects = "taskctl.cancel.*"
	announceEvery  = 5 * time.Second
	ackWait        = 30 * time.Second
)

// TaskType is the type this worker serves.
const TaskType = "reverse"

// typeDef is its registration: types.reverse in task_registry.
func typeDef(queue string) map[string]any {
	return map[string]any{
		"name": TaskType, "description": "reverses text (examples/rawworker: a worker without the SDK)",
		"schema": json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`),
		"queue":  queue, "max_attempts": 3, "timeout_ms": 10000,
	}
}

// envelope is a task message's body.
type envelope struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Queue    string          `json:"queue"`
	Payload  json.RawMessage `json:"payload"`
	Record   json.RawMessage `json:"record"`
	Revision uint64          `json:"revision"`
}

// record is a task record, kept whole: a worker changes the fields it
// owns and writes every other field back as it read it.
type record map[string]any

// worker is the state of one run.
type worker struct {
	id, queue string
	js        jetstream.JetStream
	tasks     jetstream.KeyValue
	log       *slog.Logger

	mu      sync.Mutex
	running map[string]context.CancelFunc // task id → cancel, for taskctl.cancel.<id>
}

// run connects, registers, announces and serves until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rawworker", flag.ContinueOnError)
	fs.SetOutput(stdout)
	queue := fs.String("queue", "raw", "the queue of reverse tasks")
	concurrency := fs.Int("concurrency", 2, "tasks run at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	url, user := getenv("SCALELAB_NATS_URL"), getenv("SCALELAB_NATS_USER")
	if url == "" {
		url = nats.DefaultURL
	}
	if user == "" {
		user = "worker"
	}
	// Replies only under the user's own prefix (TASKS-WIRE: the pieces).
	nc, err := nats.Connect(url, nats.Name("rawworker"), nats.UserInfo(user, getenv("SCALELAB_NATS_PASSWORD")),
		nats.CustomInboxPrefix("_INBOX."+user))
	if err != nil {
		return err
	}
	defer func() { _ = nc.Drain() }()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	w := &worker{id: fmt.Sprintf("rawworker-%08x", rand.Uint32()), queue: *queue, js: js,
		log: slog.New(slog.NewTextHandler(stdout, nil)), running: map[string]context.CancelFunc{}}
	if w.tasks, err = js.KeyValue(ctx, tasksBucket); err != nil {
		return fmt.Errorf("bind bucket %s: %w", tasksBucket, err)
	}
	// 1. Register the type (and its queue) before pulling.
	if err := w.register(ctx); err != nil {
		return err
	}
	// 3. Bind the queue's consumer, or create it.
	cons, err := w.consumer(ctx)
	if err != nil {
		return err
	}
	// 6. Cancel notices, for the tasks running here.
	sub, err := nc.Subscribe(cancelSubjects, func(m *nats.Msg) {
		id := m.Subject[len(cancelSubjects)-1:]
		w.mu.Lock()
		if cancel, ok := w.running[id]; ok {
			cancel()
		}
		w.mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	fmt.Fprintf(stdout, "rawworker %s: serving %q on queue %q\n", w.id, TaskType, w.queue)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.announce(ctx, *concurrency) }() // 2.
	for range max(1, *concurrency) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// One message per free slot.
				msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
				if err != nil {
					continue // nothing queued (a timeout), or NATS reconnecting
				}
				w.handle(ctx, msg)
			}
		}()
	}
	wg.Wait()
	return nil
}

// register puts types.reverse, if it differs, and creates queues.<queue>.
func (w *worker) register(ctx context.Context) error {
	reg, err := w.js.KeyValue(ctx, registryBucket)
	if err != nil {
		return fmt.Errorf("bind bucket %s: %w", registryBucket, err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	q, _ := json.Marshal(map[string]any{"name": w.queue, "created_at": now})
	if _, err := reg.Create(ctx, "queues."+w.queue, q); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("register queue %s: %w", w.queue, err)
	}
	def := typeDef(w.queue)
	if e, err := reg.Get(ctx, "types."+TaskType); err == nil && sameDef(e.Value(), def) {
		return nil
	}
	def["updated_at"] = now
	b, _ := json.Marshal(def)
	if _, err := reg.Put(ctx, "types."+TaskType, b); err != nil {
		return fmt.Errorf("register type %s: %w", TaskType, err)
	}
	return nil
}

// sameDef compares a stored definition with def, updated_at aside.
func sameDef(stored []byte, def map[string]any) bool {
	var cur map[string]any
	if json.Unmarshal(stored, &cur) != nil {
		return false
	}
	delete(cur, "updated_at")
	a, _ := json.Marshal(cur)
	var want map[string]any
	b, _ := json.Marshal(def)
	_ = json.Unmarshal(b, &want)
	b, _ = json.Marshal(want)
	return bytes.Equal(a, b)
}

// announce writes this worker's WorkerInfo every 5 s until ctx ends, then
// deletes it.
func (w *worker) announce(ctx context.Context, concurrency int) {
	kv, err := w.js.KeyValue(ctx, workersBucket)
	if err != nil {
		w.log.Warn("announce: bind bucket", "err", err)
		return
	}
	started := time.Now().UTC()
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		b, _ := json.Marshal(map[string]any{
			"id": w.id, "types": []string{TaskType}, "queues": []string{w.queue}, "concurrency": concurrency,
			"sdk": "go-raw", "started_at": started, "seen_at": time.Now().UTC(),
		})
		if _, err := kv.Put(ctx, w.id, b); err != nil && ctx.Err() == nil {
			w.log.Warn("announce", "err", err)
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = kv.Delete(dctx, w.id)
			cancel()
			return
		case <-t.C:
		}
	}
}

// consumer binds workers-<queue>, creating it if it does not exist.
func (w *worker) consumer(ctx context.Context) (jetstream.Consumer, error) {
	name := "workers-" + w.queue
	cons, err := w.js.Consumer(ctx, tasksStream, name)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("look up consumer %s: %w", name, err)
	}
	filters := []string{"tasks." + w.queue + ".>"}
	if w.queue == "default" {
		filters = append(filters, "tasks.*")
	}
	cons, err = w.js.CreateConsumer(ctx, tasksStream, jetstream.ConsumerConfig{
		Durable: name, FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxDeliver: -1, MaxAckPending: 10_000,
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", name, err)
	}
	return cons, nil
}

// errFinal stops a write to a record that is already final.
var errFinal = errors.New("task already final")

// errAttemptsUsed stops a claim of a task whose attempts all started.
var errAttemptsUsed = errors.New("attempts used up")

// handle claims, runs and settles one message (TASKS-WIRE 4-7).
func (w *worker) handle(ctx context.Context, msg jetstream.Msg) {
	var env envelope
	if err := json.Unmarshal(msg.Data(), &env); err != nil || env.ID == "" {
		_ = msg.TermWithReason("malformed task message")
		return
	}
	log := w.log.With("task_id", env.ID, "request_id", msg.Headers().Get("X-Request-ID"))
	if env.Type != TaskType {
		w.finish(msg, env.ID, "failed", fmt.Sprintf("no handler for task type %q", env.Type), nil)
		return
	}
	// 5. Claim: running, attempts + 1, by compare-and-set.
	delivered := uint64(1)
	if meta, err := msg.Metadata(); err == nil {
		delivered = meta.NumDelivered
	}
	var from *version
	if delivered == 1 && len(env.Record) > 0 && env.Revision > 0 {
		from = &version{raw: env.Record, rev: env.Revision}
	}
	var attempt, limit int
	var timeout time.Duration
	v, err := w.updateLooking(env.ID, from, func(r record) error {
		limit, timeout = intOf(r["max_attempts"], 5), time.Duration(intOf(r["timeout_ms"], 60_000))*time.Millisecond
		attempt = intOf(r["attempts"], 0)
		switch {
		case final(r):
			return errFinal
		case attempt >= limit:
			return errAttemptsUsed
		}
		attempt++
		r["attempts"], r["state"], r["worker"], r["started_at"] = attempt, "running", w.id, now()
		return nil
	})
	switch {
	case errors.Is(err, errFinal):
		_ = msg.Ack() // a duplicate of a finished (or cancelled) task
		return
	case errors.Is(err, errAttemptsUsed):
		w.bury(msg, env, attempt, "gave up: the last attempt died with its worker")
		return
	case errors.Is(err, jetstream.ErrKeyNotFound):
		_ = msg.TermWithReason("task record missing")
		return
	case err != nil:
		log.Warn("claim", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}

	// 6. Run, under the timeout, with heartbeats and cancel.
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	cancelled := false
	w.mu.Lock()
	w.running[env.ID] = func() { cancelled = true; cancel() }
	w.mu.Unlock()
	go func() {
		for t := time.NewTicker(ackWait / 3); ; {
			select {
			case <-runCtx.Done():
				t.Stop()
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	result, runErr := reverse(runCtx, env.Payload, func(pct int, text string) {
		_, _ = w.update(env.ID, nil, func(r record) error {
			if final(r) {
				return errFinal
			}
			r["progress"], r["progress_message"] = pct, text
			return nil
		})
	})
	w.mu.Lock()
	wasCancelled := cancelled
	delete(w.running, env.ID)
	w.mu.Unlock()
	cancel()

	// 7. Settle: the record first, then the message.
	switch {
	case wasCancelled:
		_ = msg.TermWithReason("cancelled") // the record already says so
	case runErr == nil:
		_, err := w.update(env.ID, v, func(r record) error {
			if final(r) {
				return errFinal
			}
			r["state"], r["result"], r["error"], r["progress"], r["finished_at"] = "succeeded", result, "", 100, now()
			return nil
		})
		switch {
		case err == nil, errors.Is(err, errFinal):
			_ = msg.Ack()
		default:
			_ = msg.NakWithDelay(time.Second) // not recorded: run it again
		}
	case errors.Is(runErr, errPermanent):
		w.finish(msg, env.ID, "failed", runErr.Error(), nil)
	case ctx.Err() != nil:
		w.requeue(msg, env.ID, "interrupted by worker shutdown", 0)
	case attempt >= limit:
		w.bury(msg, env, attempt, runErr.Error())
	default:
		w.requeue(msg, env.ID, runErr.Error(), backoff(attempt))
	}
}

// errPermanent marks a failure no retry fixes.
var errPermanent = errors.New("permanent")

// reverse is the handler: {"text": "abc"} → {"reversed": "cba"}.
func reverse(ctx context.Context, payload json.RawMessage, progress func(int, string)) (any, error) {
	var p struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(payload, &p); err != nil || p.Text == nil {
		return nil, fmt.Errorf("%w: the payload needs a string \"text\"", errPermanent)
	}
	runes := []rune(*p.Text)
	slices.Reverse(runes)
	progress(50, "reversed")
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return map[string]any{"reversed": string(runes), "runes": len(runes)}, nil
}

// finish records a final state and terminates the message.
func (w *worker) finish(msg jetstream.Msg, id, state, reason string, attempts *int) {
	_, err := w.update(id, nil, func(r record) error {
		if final(r) {
			return errFinal
		}
		r["state"], r["error"], r["finished_at"] = state, reason, now()
		if attempts != nil {
			r["attempts"] = *attempts
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFinal) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.TermWithReason(reason)
}

// requeue records the task queued again and naks it with delay.
func (w *worker) requeue(msg jetstream.Msg, id, reason string, delay time.Duration) {
	_, err := w.update(id, nil, func(r record) error {
		if final(r) {
			return errFinal
		}
		r["state"], r["error"] = "queued", reason
		return nil
	})
	if errors.Is(err, errFinal) {
		_ = msg.TermWithReason("cancelled")
		return
	}
	if delay > 0 {
		_ = msg.NakWithDelay(delay)
	} else {
		_ = msg.Nak()
	}
}

// bury publishes the task to the DLQ, records it dead, then terminates it.
func (w *worker) bury(msg jetstream.Msg, env envelope, attempts int, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	letter := nats.NewMsg("dlq.tasks." + env.Type)
	letter.Data = msg.Data()
	letter.Header.Set("Scalelab-Task-Id", env.ID)
	letter.Header.Set("Scalelab-Attempts", strconv.Itoa(attempts))
	letter.Header.Set("Scalelab-Error", reason[:min(len(reason), 1000)])
	letter.Header.Set("X-Request-ID", msg.Headers().Get("X-Request-ID"))
	_, err := w.js.PublishMsg(ctx, letter, jetstream.WithMsgID(fmt.Sprintf("dead-%s-%d", env.ID, attempts)),
		jetstream.WithExpectStream(dlqStream))
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	w.finish(msg, env.ID, "dead", reason, &attempts)
}

// version is a record as last read or written, with its revision.
type version struct {
	raw json.RawMessage
	rev uint64
}

// update changes the record of id with fn by compare-and-set, from last
// (nil: read it first), reading again after a conflicting write.
func (w *worker) update(id string, last *version, fn func(record) error) (*version, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 10 {
		if last == nil {
			e, err := w.tasks.Get(ctx, id)
			if err != nil {
				return nil, err
			}
			last = &version{raw: e.Value(), rev: e.Revision()}
		}
		dec := json.NewDecoder(bytes.NewReader(last.raw))
		dec.UseNumber() // numbers written back as they were read
		var r record
		if err := dec.Decode(&r); err != nil {
			return nil, err
		}
		if err := fn(r); err != nil {
			return nil, err
		}
		r["updated_at"] = now()
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		rev, err := w.tasks.Update(ctx, id, b, last.rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			last = nil // somebody wrote first: read and redo
			continue
		}
		if err != nil {
			return nil, err
		}
		return &version{raw: b, rev: rev}, nil
	}
	return nil, fmt.Errorf("update task %s: too many conflicting writes", id)
}

// updateLooking is update, looking again for about a second for a record
// that is not there yet (a replica behind its message).
func (w *worker) updateLooking(id string, last *version, fn func(record) error) (*version, error) {
	for _, pause := range []time.Duration{50, 100, 200, 400, 0} {
		v, err := w.update(id, last, fn)
		if !errors.Is(err, jetstream.ErrKeyNotFound) || pause == 0 {
			return v, err
		}
		last = nil
		time.Sleep(pause * time.Millisecond)
	}
	panic("unreachable")
}

// final reports whether the record's state is final.
func final(r record) bool {
	switch r["state"] {
	case "succeeded", "failed", "dead", "cancelled":
		return true
	}
	return false
}

// intOf reads a JSON number, def when absent or 0.
func intOf(v any, def int) int {
	if n, ok := v.(json.Number); ok {
		if i, err := n.Int64(); err == nil && i > 0 {
			return int(i)
		}
	}
	if i, ok := v.(int); ok && i > 0 {
		return i
	}
	return def
}

// backoff is the delay before the next attempt: 1 s doubling, at most 5
// min, ±10 %.
func backoff(attempt int) time.Duration {
	d := time.Second << min(attempt-1, 9)
	d = min(d, 5*time.Minute)
	return d - d/10 + time.Duration(rand.Int64N(int64(d)/5+1))
}

// now is the time as records store it.
func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }
