package gateway

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// The queues (issue #26): GET /queues lists them with what an operator
// watches (depth, in flight, oldest task's age, live workers, paused, and
// the caller's tasks per state); POST /queues/{name}/pause and /resume
// pause and resume one: the registry's QueueDef.Paused, which every
// worker watches (worker/pause.go).

// TaskTotals counts tasks per state; owner "" = every owner, typ/queue "" = any.
// The gateway's task index implements it; GET /queues reads each
// queue's totals from it.
type TaskTotals interface {
	Totals(owner, typ, queue string) map[task.State]int
}

// Bounds of GET /queues.
const (
	// maxQueuesListed caps the queues one answer lists (registry order):
	// each costs a few NATS reads per queueStatsTTL.
	maxQueuesListed = 100
	// queueStatsTTL is how long the NATS reads behind GET /queues are
	// reused: a console polled by many users costs NATS one set of reads
	// per gateway per TTL, whatever the number of requests.
	queueStatsTTL = 250 * time.Millisecond
	// queueStatsTimeout bounds one set of reads.
	queueStatsTimeout = 3 * time.Second
)

// queueStatusView is one queue as GET /queues and the pause and resume
// routes answer it.
type queueStatusView struct {
	Name     string     `json:"name"`
	Paused   bool       `json:"paused"`
	PausedAt *time.Time `json:"paused_at,omitempty"`
	// Depth is the tasks on the queue, waiting or running (its consumer's
	// pending plus ack-pending); InFlight those handed to a worker and not
	// yet acked; 0 while no worker ever served it (no consumer).
	Depth    uint64 `json:"depth"`
	InFlight int    `json:"in_flight"`
	// OldestAgeSeconds is the age of the oldest task still on the queue,
	// waiting or running; 0 when it has none.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Workers are the live workers serving it.
	Workers int `json:"workers"`
	// Dead and Totals are the caller's tasks of the queue (all tasks with
	// tasks:admin), from the task index; absent when the gateway has none.
	Dead   *int           `json:"dead,omitempty"`
	Totals map[string]int `json:"totals,omitempty"`
}

// queueStats are the NATS reads behind one queue's view, shared by every
// caller for queueStatsTTL.
type queueStats struct {
	def              task.QueueDef
	depth            uint64
	inFlight         int
	oldestAgeSeconds float64
	workers          int
}

// queueBook reads the queues' state from NATS, cached for queueStatsTTL.
type queueBook struct {
	js      jetstream.JetStream
	catalog *task.Catalog

	// mu is held while the reads are made: concurrent requests wait for
	// one set of reads rather than each make their own.
	mu     sync.Mutex
	at     time.Time
	stats  []queueStats
	stream jetstream.Stream
}

func newQueueBook(nc *nats.Conn, catalog *task.Catalog) *queueBook {
	js, _ := jetstream.New(nc) // fails only on bad options
	return &queueBook{js: js, catalog: catalog}
}

// queueOrder is the order of GET /queues: the built-in queues in priority
// order, then the others by name.
func queueOrder(names []string) []string {
	rank := func(n string) int {
		if i := slices.Index(task.BuiltinQueues, n); i >= 0 {
			return i
		}
		return len(task.BuiltinQueues)
	}
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b)) })
	return out
}

// list returns the stats of the registered queues (at most
// maxQueuesListed), read at most queueStatsTTL ago.
func (b *queueBook) list(ctx context.Context) ([]queueStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stats != nil && time.Since(b.at) < queueStatsTTL {
		return b.stats, nil
	}
	names := queueOrder(b.catalog.Queues())
	if len(names) > maxQueuesListed {
		names = names[:maxQueuesListed]
	}
	stats, err := b.read(ctx, names)
	if err != nil {
		return nil, err
	}
	b.stats, b.at = stats, time.Now()
	return stats, nil
}

// forget drops the cached stats: a pause or resume is seen at once.
func (b *queueBook) forget() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats = nil
}

// one returns the stats of queue name, read now; zero when it is not
// registered.
func (b *queueBook) one(ctx context.Context, name string) (queueStats, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	stats, err := b.read(ctx, []string{name})
	if err != nil || len(stats) == 0 {
		return queueStats{}, err // none: deleted from the registry
	}
	return stats[0], nil
}

// read reads the stats of the queues names: their definitions (paused),
// their consumers (depth, in flight), their oldest tasks and the live
// workers. A queue whose definition is gone since the catalog listed it
// is left out. Called with mu held.
func (b *queueBook) read(ctx context.Context, names []string) ([]queueStats, error) {
	ctx, cancel := context.WithTimeout(ctx, queueStatsTimeout)
	defer cancel()
	reg := b.catalog.Registry()
	workers, err := reg.Workers(ctx)
	if err != nil {
		return nil, queuesDown(err)
	}
	served := map[string]int{}
	for _, w := range workers {
		for _, q := range slices.Compact(slices.Sorted(slices.Values(w.Queues))) {
			served[q]++
		}
	}
	if b.stream == nil {
		if b.stream, err = b.js.Stream(ctx, task.Stream); err != nil {
			return nil, queuesDown(err)
		}
	}
	out := make([]queueStats, 0, len(names))
	for _, name := range names {
		def, err := reg.Queue(ctx, name)
		if errors.Is(err, task.ErrUnknownName) {
			continue
		}
		if err != nil {
			return nil, queuesDown(err)
		}
		s := queueStats{def: *def, workers: served[name]}
		cons, err := b.js.Consumer(ctx, task.Stream, task.QueueConsumer(name))
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			// No worker ever served it: its tasks (if any) wait, uncounted.
		case err != nil:
			return nil, queuesDown(err)
		default:
			info := cons.CachedInfo()
			s.depth, s.inFlight = info.NumPending+uint64(info.NumAckPending), info.NumAckPending
		}
		if oldest, ok := task.OldestOnQueue(ctx, b.stream, name); ok {
			s.oldestAgeSeconds = max(time.Since(oldest).Seconds(), 0)
		}
		out = append(out, s)
	}
	return out, nil
}

// queuesDown is the answer when NATS does not answer the reads.
func queuesDown(err error) error {
	return apperr.Wrap(err, apperr.Unavailable, "queue state is not available")
}

// view is s as claims may see it: the totals (and dead) are the caller's
// own tasks unless it has tasks:admin.
func (s queueStats) view(claims *auth.Claims, totals TaskTotals) queueStatusView {
	v := queueStatusView{
		Name: s.def.Name, Paused: s.def.Paused, PausedAt: s.def.PausedAt,
		Depth: s.depth, InFlight: s.inFlight, OldestAgeSeconds: s.oldestAgeSeconds, Workers: s.workers,
	}
	if totals == nil || claims == nil {
		return v
	}
	owner := claims.Subject
	if claims.HasScope(auth.ScopeTasksAdmin) {
		owner = ""
	}
	counts := totals.Totals(owner, "", s.def.Name)
	if counts == nil {
		return v // the index is loading: no totals yet
	}
	v.Totals = make(map[string]int, len(slotStates)+1)
	all := 0
	for _, st := range slotStates {
		v.Totals[string(st)] = counts[st]
		all += counts[st]
	}
	v.Totals["all"] = all
	dead := counts[task.Dead]
	v.Dead = &dead
	return v
}

// handleListQueues answers GET /queues: every registered queue (at most
// maxQueuesListed), built-in ones first, with its state.
func handleListQueues(book *queueBook, totals TaskTotals) echo.HandlerFunc {
	return func(c echo.Context) error {
		stats, err := book.list(c.Request().Context())
		if err != nil {
			return err
		}
		claims := claimsOf(c)
		out := make([]queueStatusView, 0, len(stats))
		for _, s := range stats {
			out = append(out, s.view(claims, totals))
		}
		return c.JSON(http.StatusOK, struct {
			Queues []queueStatusView `json:"queues"`
		}{out})
	}
}

// handlePauseQueue answers POST /queues/{name}/pause (paused true) and
// /resume: it sets the queue's Paused in the registry (compare-and-set;
// pausing a paused queue changes nothing) and answers 200 with the queue.
// Workers stop pulling from a paused queue within about a second; its
// tasks, and the ones submitted to it meanwhile, wait until it is resumed.
func handlePauseQueue(book *queueBook, totals TaskTotals, paused bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		name := c.Param("name")
		if !task.ValidName(name) {
			return apperr.New(apperr.Invalid, "queue name must be 1-%d letters, digits, '_' or '-'", task.MaxNameLen)
		}
		ctx := c.Request().Context()
		if _, err := book.catalog.Registry().SetPaused(ctx, name, paused); err != nil {
			if errors.Is(err, task.ErrUnknownName) {
				return apperr.New(apperr.NotFound, "no queue %s", name)
			}
			return apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
		}
		book.forget()
		s, err := book.one(ctx, name)
		if err != nil {
			return err
		}
		if s.def.Name == "" {
			// Deleted from the registry between the write and the read.
			return apperr.New(apperr.NotFound, "no queue %s", name)
		}
		return c.JSON(http.StatusOK, s.view(claimsOf(c), totals))
	}
}
