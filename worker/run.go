package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

// Run is the worker role: it serves the built-in task types (and
// cfg.Handlers) and the process service until ctx is cancelled (see
// Worker.Run). The caller owns nc and drains it after Run returns.
func Run(ctx context.Context, cfg Config, nc *nats.Conn, log *slog.Logger) error {
	cfg.Logger = log
	w := New(nc, cfg)
	w.builtin = true
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("worker: jetstream: %w", err)
	}
	builtins := builtinHandlers(w.cfg, js)
	for _, d := range task.BuiltinTypes() {
		w.handle(d, builtins[d.Name])
	}
	for typ, h := range cfg.Handlers {
		w.handle(task.TypeDef{Name: typ}, h)
	}
	return w.Run(ctx)
}

// Run serves the task types given to Handle (and, for the worker role, the
// process service) until ctx is cancelled, then stops taking work, lets
// running tasks finish within the configured ShutdownTimeout, hands the
// rest back to the queue, and returns. It announces the types it serves to
// the task-type registry before it takes work, and itself as alive while
// it runs. The caller owns the connection and drains it after Run returns.
// A Worker runs once, and needs at least one type: Run returns an error
// otherwise, at once.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	if len(w.types) == 0 {
		return errors.New("worker: no task types to serve: call Handle before Run")
	}
	cfg, nc := w.cfg, w.nc
	log := w.cfg.Logger.With("role", "worker", "worker", cfg.ID)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("worker: jetstream: %w", err)
	}
	queues := w.served()
	if err := validateQueues(queues); err != nil {
		return err
	}
	var store *task.Store
	var reg *task.Registry
	sources := make([]*queueSource, len(queues))
	// The task streams are admin's to provision (up, or `scalelab tasks
	// provision`): wait for them rather than create them. The consumers
	// of the queues are the workers' own.
	err = natsconn.Retry(ctx, log, "open task streams", func(ctx context.Context) error {
		var err error
		if store, err = task.Open(ctx, js, cfg.Provision, log); err != nil {
			return err
		}
		if reg, err = task.OpenRegistry(ctx, js); err != nil {
			return err
		}
		if err = w.register(ctx, reg, queues); err != nil {
			return err
		}
		for i, q := range queues {
			cons, err := js.CreateOrUpdateConsumer(ctx, task.Stream, consumerConfig(cfg, q.Name))
			if err != nil {
				return fmt.Errorf("consumer of queue %s: %w", q.Name, err)
			}
			sources[i] = &queueSource{name: q.Name, weight: q.Weight, cons: cons}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it was ready: nothing to drain
		}
		return fmt.Errorf("worker: %w", err)
	}

	metricsReg := ops.NewRegistry()
	m := newMetrics(metricsReg)
	for _, q := range sources {
		q.running = m.queueRunning.WithLabelValues(q.name)
	}
	r := newRunner(cfg, js, &queueSet{queues: sources, strict: cfg.StrictPriority}, store, w.handlers, m, log)
	r.initPause()

	// The process service is the worker role's, not a program's own.
	stopService := func() error { return nil }
	if w.builtin {
		svc, err := addProcessService(nc, cfg.ID, r.stats, log)
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		stopService = svc.Stop
	}
	// Every worker hears every cancel notice; the one running the task acts.
	cancelSub, err := nc.Subscribe(task.CancelSubjectPrefix+"*", func(m *nats.Msg) {
		r.cancelRunning(m.Subject[len(task.CancelSubjectPrefix):])
	})
	if err != nil {
		_ = stopService()
		return fmt.Errorf("worker: subscribe to cancel notices: %w", err)
	}
	attrs := []any{"stream", task.Stream, "queues", queueNames(queues), "strict_priority", cfg.StrictPriority,
		"types", len(w.types), "concurrency", cfg.Concurrency}
	if w.builtin {
		attrs = append(attrs, "process_subject", wire.ProcessSubject)
	}
	log.Info("worker started", attrs...)

	g, gctx := errgroup.WithContext(ctx)
	if cfg.Addr != "" || cfg.Listener != nil {
		hc := httpserver.Config{Addr: cfg.Addr, Listener: cfg.Listener, ShutdownTimeout: 5 * time.Second}
		ln, err := httpserver.Listen(hc)
		if err != nil {
			_ = stopService()
			_ = cancelSub.Unsubscribe()
			return fmt.Errorf("worker: %w", err)
		}
		g.Go(func() error { return httpserver.Serve(gctx, hc, ln, ops.Handler(metricsReg, ops.NATSReady(nc)), log) })
	}
	// The queues paused now, before any slot pulls; then every pause and
	// resume while it runs (pause.go).
	watchPaused, err := r.watchPaused(ctx, reg)
	if err != nil {
		log.Warn("cannot watch the queues' definitions: pausing a queue will not stop this worker", "err", err)
		watchPaused = func(context.Context) error { return nil }
	}
	r.start()
	g.Go(func() error { return w.announce(gctx, reg, queues, log) })
	g.Go(func() error { return r.sampleQueues(gctx) })
	g.Go(func() error { return watchPaused(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		// Stop taking work first: no new process requests, no new pulls.
		r.stopTaking()
		if err := stopService(); err != nil {
			log.Warn("stop process service", "err", err)
		}
		r.finish(cfg.ShutdownTimeout)
		_ = cancelSub.Unsubscribe()
		log.Info("worker stopped")
		return nil
	})
	return g.Wait()
}

// runner runs tasks with at most cfg.Concurrency at once.
//
// Each of its cfg.Concurrency slots pulls one message only when it is free
// (see puller), rather than a Consume callback fed from a prefetch buffer:
// a buffered message would wait behind a long task while its ack wait runs
// out, and be redelivered to a second worker.
type runner struct {
	cfg      Config
	js       jetstream.JetStream
	queues   *queueSet
	store    *task.Store
	handlers map[string]Handler
	metrics  *metrics
	log      *slog.Logger

	// pullCtx ends when shutdown starts: slots stop pulling. A pull request
	// cancelled this way is withdrawn (the server sees no more interest).
	pullCtx    context.Context
	stopTaking context.CancelFunc
	// taskCtx is the parent of every handler's context. It is not the run
	// ctx: on shutdown, running tasks get a grace period before it ends.
	taskCtx    context.Context
	cancelTask context.CancelFunc
	slots      sync.WaitGroup
	// running maps the id of each task running here to the cancel func
	// of its context, for cancelRunning.
	running sync.Map
	// counts are the outcomes so far, for the process service's stats.
	counts taskCounts
	// queueStats are the served queues as sampleQueues last read them.
	queueStats atomic.Pointer[[]QueueStats]
}

func newRunner(cfg Config, js jetstream.JetStream, queues *queueSet, store *task.Store, handlers map[string]Handler, m *metrics, log *slog.Logger) *runner {
	pullCtx, stopTaking := context.WithCancel(context.Background())
	taskCtx, cancelTask := context.WithCancel(context.Background())
	return &runner{
		cfg: cfg, js: js, queues: queues, store: store, handlers: handlers, metrics: m, log: log,
		pullCtx: pullCtx, stopTaking: stopTaking,
		taskCtx: taskCtx, cancelTask: cancelTask,
	}
}

// start runs the slots; finish stops them. A worker serving one queue
// pulls it as it always did (pull); one serving several picks a queue for
// each free slot (pullQueues).
func (r *runner) start() {
	for slot := range r.cfg.Concurrency {
		r.slots.Add(1)
		go func() {
			defer r.slots.Done()
			if len(r.queues.queues) == 1 {
				q := r.queues.queues[0]
				r.pull(q, puller{cons: q.cons, expires: pullExpires})
				return
			}
			r.pullQueues(slot)
		}()
	}
}

// pull is one slot of a worker serving one queue: fetch a task, run it,
// repeat until stopTaking.
func (r *runner) pull(q *queueSource, p puller) {
	backoff := 100 * time.Millisecond
	for r.pullCtx.Err() == nil {
		changes := r.queues.changes()
		live := q.live.Load()
		if live.ctx.Err() != nil && r.pullCtx.Err() == nil {
			r.waitChange(changes) // paused: until it is resumed
			continue
		}
		msg, err := p.next(live.ctx)
		switch {
		case err == nil && q.paused.Load():
			r.handBackPaused(q, msg)
		case err == nil:
			backoff = 100 * time.Millisecond
			r.handleFrom(q, msg)
		case r.pullCtx.Err() != nil:
			return
		case live.ctx.Err() != nil:
			// Paused while it waited: the pull was withdrawn.
		case errors.Is(err, nats.ErrTimeout):
			// The pull request expired with nothing queued: pull again.
		default:
			// NATS is reconnecting or the consumer is being recreated.
			r.log.Warn("pull task", "err", err, "retry_in", backoff)
			_ = sleepCtx(r.pullCtx, backoff) // ends early only on shutdown
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

// abandonAfter bounds the wait for handlers that ignore their cancelled
// context: their messages are redelivered after the ack wait anyway.
const abandonAfter = 5 * time.Second

// finish waits up to grace for running tasks, then cancels them; cancelled
// tasks are handed back to the queue by handle. A handler that ignores its
// context is abandoned after abandonAfter more, so shutdown always ends.
func (r *runner) finish(grace time.Duration) {
	r.stopTaking()
	done := make(chan struct{})
	go func() { r.slots.Wait(); close(done) }()
	defer r.cancelTask()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	r.log.Warn("grace period over, interrupting running tasks", "grace", grace)
	r.cancelTask()
	select {
	case <-done:
	case <-time.After(abandonAfter):
		r.log.Error("tasks ignore cancellation; abandoning them to redelivery after the ack wait", "waited", abandonAfter)
	}
}
