package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/btree"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// The task index: what GET /tasks lists and what the task event streams
// tell. It is a view of the tasks bucket, kept by a watch of the bucket
// (a KV watch: an ordered consumer on KV_tasks that delivers the last
// value of every key, then every write as it happens).
//
// Why a view fed by the bucket and not an index written beside each
// record: the bucket already is a stream of state changes (History 1,
// every write a message), so watching it costs no write on the task path;
// an index of its own (a stream or bucket of "<owner>.<state>.<id>" keys)
// would add a write per state change, two with the delete of the old key,
// to a pipeline whose cost is its writes (issue #29). And NATS can only
// walk a stream forward by sequence, which is neither "newest first" nor
// "counts per state", so a listing served from the server would scan. The
// price is memory in each gateway (about 200 bytes a record, see
// bench/tasklist) and a few milliseconds of lag after a write.
//
// Order and filters: B-trees of entries ordered newest first (created_at
// descending, then id), one of every task, one per state, and the same two
// per owner. A page is a walk of the narrowest tree from the cursor: a
// filter by state or owner never looks at another record; a filter by type
// or queue filters the walk and gives up after indexScanBudget entries,
// answering a short page whose cursor resumes the walk (never an unbounded
// scan). Totals per state are counters kept per (owner, type, queue), any
// of them "any".

// indexScanBudget bounds the entries one page may look at to fill itself
// with a type or queue filter: about 10 ms of walking here.
const indexScanBudget = 200_000

// indexSweepEvery is how often the index drops the records the bucket has
// expired (its TTL ends them without a delete the watch would see).
const indexSweepEvery = time.Minute

// stateSlot numbers the states for the totals.
var stateSlot = map[task.State]int{
	task.Queued: 0, task.Running: 1, task.Succeeded: 2, task.Failed: 3, task.Dead: 4, task.Cancelled: 5,
}

// slotStates is stateSlot's inverse.
var slotStates = [...]task.State{task.Queued, task.Running, task.Succeeded, task.Failed, task.Dead, task.Cancelled}

// maxIndexedError bounds the error text an entry keeps (the listing shows
// the start; the task's page reads the record).
const maxIndexedError = 256

// indexEntry is one task as the index holds it: what a listing shows, in
// 80 bytes (a million records take about 200 MB with the map and trees
// around them; see bench/tasklist). Owners, types and queues are numbers
// into the index's table of names (0: none, or "any" in a key); the state
// is its slot. It is changed in place, under the index's write lock, when
// only its progress or counters change.
type indexEntry struct {
	id                                string
	errMsg                            string
	created, updated                  int64 // Unix nanoseconds
	rev                               uint64
	owner, typ, queue                 uint32
	attempts, maxAttempts, generation uint16
	progress                          uint8
	state                             uint8 // stateSlot
}

// less orders entries newest first: created descending, then id
// descending, a total order since ids are unique.
func (e *indexEntry) less(o *indexEntry) bool {
	if e.created != o.created {
		return e.created > o.created
	}
	return e.id > o.id
}

// taskSummary is a task in a listing and in GET /tasks/events: the record
// without its payload, result and worker (GET /tasks/{id} has them).
type taskSummary struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	Queue       string     `json:"queue"`
	State       task.State `json:"state"`
	Attempts    int        `json:"attempts"`
	MaxAttempts int        `json:"max_attempts,omitempty"`
	Generation  int        `json:"generation,omitempty"`
	Progress    int        `json:"progress"`
	Error       string     `json:"error,omitempty"`
	Owner       string     `json:"owner,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// summary is e as a listing shows it.
func (x *taskIndex) summary(e *indexEntry) taskSummary {
	return taskSummary{
		ID: e.id, Type: x.names[e.typ], Queue: x.names[e.queue], State: slotStates[e.state],
		Attempts: int(e.attempts), MaxAttempts: int(e.maxAttempts), Generation: int(e.generation),
		Progress: int(e.progress), Error: e.errMsg, Owner: x.names[e.owner],
		CreatedAt: time.Unix(0, e.created).UTC(), UpdatedAt: time.Unix(0, e.updated).UTC(),
	}
}

// recordHead is the part of a record the index reads: decoding into it
// skips the payload and the result.
type recordHead struct {
	ID          string     `json:"id"`
	Type        string     `json:"type"`
	Queue       string     `json:"queue"`
	State       task.State `json:"state"`
	Attempts    int        `json:"attempts"`
	MaxAttempts int        `json:"max_attempts"`
	Generation  int        `json:"generation"`
	Progress    int        `json:"progress"`
	Error       string     `json:"error"`
	Owner       string     `json:"owner"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// treeKey names a tree: an owner (0 for every owner) and a state (its
// slot + 1; 0 for every state).
type treeKey struct {
	owner uint32
	state uint8
}

// totalsKey names a set of counters: owner, type and queue, 0 for "any".
type totalsKey struct{ owner, typ, queue uint32 }

// stateCounts counts tasks per state, in stateSlot's order.
type stateCounts [len(slotStates)]int

// errIndexLoading is answered while the index reads the bucket at start.
var errIndexLoading = errors.New("gateway: the task index is loading")

// taskIndex is the gateway's index of task records.
//
// It follows the bucket only while it is used: the first listing, event
// stream or totals read starts the watch (the index loads, answering
// errIndexLoading meanwhile), and indexIdleAfter without any, and with no
// stream open, stops it and drops what it held (idleAfter). Following costs every
// task's writes a delivery and a decode in each index (about 45 µs of CPU
// a task on `up`, 12 %; bench/tasks/README.md), which a platform nobody
// is looking at should not pay.
type taskIndex struct {
	ttl   time.Duration // the bucket's; 0: records are kept until deleted
	log   *slog.Logger
	watch func(context.Context) (jetstream.KeyWatcher, error)

	mu       sync.RWMutex
	byID     map[string]*indexEntry
	trees    map[treeKey]*btree.BTreeG[*indexEntry]
	totals   map[totalsKey]*stateCounts
	names    []string          // owners, types and queues by number; names[0] is ""
	nums     map[string]uint32 // names' inverse
	subs     subscribers       // taskevents.go
	loadedCh chan struct{}     // closed once the current watch has loaded

	ready    atomic.Bool
	loaded   atomic.Int64 // entries applied, for the loading message
	lastUsed atomic.Int64 // Unix ns of the last use
	wake     chan struct{}

	// idleAfter is how long the index goes unused before it stops
	// following the bucket; idleCheck how often it looks.
	idleAfter, idleCheck time.Duration
}

// The defaults of taskIndex.idleAfter and idleCheck.
const (
	indexIdleAfter = 10 * time.Minute
	indexIdleCheck = 30 * time.Second
)

// newTaskIndex returns an empty index, not following anything: run does.
func newTaskIndex(ttl time.Duration, log *slog.Logger) *taskIndex {
	x := &taskIndex{ttl: ttl, log: log, wake: make(chan struct{}, 1), idleAfter: indexIdleAfter, idleCheck: indexIdleCheck}
	x.clear()
	return x
}

// clear empties the index, under its write lock or before it is shared.
func (x *taskIndex) clear() {
	x.byID = make(map[string]*indexEntry)
	x.trees = make(map[treeKey]*btree.BTreeG[*indexEntry])
	x.totals = make(map[totalsKey]*stateCounts)
	x.names = []string{""}
	x.nums = map[string]uint32{"": 0}
	if x.subs.byTask == nil {
		x.subs = newSubscribers()
	}
	x.loadedCh = make(chan struct{})
	x.ready.Store(false)
	x.loaded.Store(0)
}

// TaskIndex is an index of task records that several gateways of one
// process share (Config.TaskIndex): each would otherwise follow the tasks
// bucket on its own, reading every write of every task once per gateway.
type TaskIndex struct{ x *taskIndex }

// StartTaskIndex makes an index of the tasks bucket over nc, which
// follows the bucket while it is used, until ctx ends. nc's user needs
// what a gateway's has (natsconf: a watch of the bucket).
func StartTaskIndex(ctx context.Context, nc *nats.Conn, log *slog.Logger) (*TaskIndex, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	x, err := startTaskIndex(ctx, js, log)
	if err != nil {
		return nil, fmt.Errorf("bind the tasks bucket: %w", err)
	}
	return &TaskIndex{x: x}, nil
}

// startTaskIndex binds the tasks bucket and runs an index of it until ctx
// ends, when it also ends every event stream.
func startTaskIndex(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*taskIndex, error) {
	return startTaskIndexIdle(ctx, js, log, indexIdleAfter, indexIdleCheck)
}

// startTaskIndexIdle is startTaskIndex with its idle times (tests).
func startTaskIndexIdle(ctx context.Context, js jetstream.JetStream, log *slog.Logger, idleAfter, idleCheck time.Duration) (*taskIndex, error) {
	kv, err := js.KeyValue(ctx, task.Bucket)
	if err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	x := newTaskIndex(st.TTL(), log)
	x.idleAfter, x.idleCheck = idleAfter, idleCheck
	x.watch = func(ctx context.Context) (jetstream.KeyWatcher, error) { return kv.WatchAll(ctx) }
	go x.run(ctx)
	return x, nil
}

// use notes a use of the index, and wakes it if it sleeps.
func (x *taskIndex) use() {
	x.lastUsed.Store(time.Now().UnixNano())
	select {
	case x.wake <- struct{}{}:
	default:
	}
}

// awaitLoaded notes a use and waits up to wait (or ctx) for the index to
// have loaded; it reports whether it has. A first listing after a quiet
// spell waits here while a small bucket loads, rather than get a 503.
func (x *taskIndex) awaitLoaded(ctx context.Context, wait time.Duration) bool {
	x.use()
	if x.ready.Load() {
		return true
	}
	x.mu.RLock()
	ch := x.loadedCh
	x.mu.RUnlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return x.ready.Load()
}

// run follows the bucket whenever the index is used, until ctx ends.
func (x *taskIndex) run(ctx context.Context) {
	defer func() {
		x.mu.Lock()
		x.subs.closeAll()
		x.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.wake:
		}
		x.follow(ctx)
		x.mu.RLock()
		open := x.subs.n
		x.mu.RUnlock()
		if open > 0 {
			x.use() // the watch ended under open streams: follow again at once
		}
	}
}

// follow applies a watch's updates until ctx ends, the watch fails, or
// the index goes unused for indexIdleAfter with no stream open; then it
// empties the index.
func (x *taskIndex) follow(ctx context.Context) {
	start := time.Now()
	w, err := x.watch(ctx)
	if err != nil {
		x.log.Warn("task index: watch the tasks bucket", "err", err)
		select { // again at the next use, but not in a tight loop
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	x.log.Info("task index loading")
	defer func() {
		_ = w.Stop()
		x.mu.Lock()
		x.clear()
		x.mu.Unlock()
	}()
	sweep := time.NewTicker(indexSweepEvery)
	defer sweep.Stop()
	idle := time.NewTicker(x.idleCheck)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-sweep.C:
			x.sweep(now)
		case now := <-idle.C:
			if x.unused(now) {
				x.log.Info("task index unused: it stops following the tasks bucket until the next use", "idle", x.idleAfter)
				return
			}
		case <-x.wake: // a use while following: lastUsed says it
		case e, ok := <-w.Updates():
			if !ok {
				x.log.Warn("task index: the watch of the tasks bucket ended; it starts again at the next use")
				return
			}
			if e == nil { // the marker after the values the bucket held
				if !x.ready.Swap(true) {
					x.mu.Lock()
					close(x.loadedCh)
					x.mu.Unlock()
					x.log.Info("task index loaded", "tasks", x.loaded.Load(), "took", time.Since(start).Round(time.Millisecond))
				}
				continue
			}
			x.apply(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
		}
	}
}

// unused reports whether nobody has used the index for indexIdleAfter
// and no event stream is open.
func (x *taskIndex) unused(now time.Time) bool {
	x.mu.RLock()
	open := x.subs.n
	x.mu.RUnlock()
	return open == 0 && now.Sub(time.Unix(0, x.lastUsed.Load())) > x.idleAfter
}

// num returns the number of the name s, giving it one if it has none,
// so that a million records of one type share one string.
func (x *taskIndex) num(s string) uint32 {
	if n, ok := x.nums[s]; ok {
		return n
	}
	n := uint32(len(x.names))
	x.names = append(x.names, s)
	x.nums[s] = n
	return n
}

// lookup returns the number of the name s, and false if no record ever
// had it (nothing can match it). "" is 0, "any".
func (x *taskIndex) lookup(s string) (uint32, bool) {
	n, ok := x.nums[s]
	return n, ok
}

// apply records the value of the record id at revision rev, or its
// deletion, and tells the event streams.
func (x *taskIndex) apply(id string, value []byte, rev uint64, deleted bool) {
	var h recordHead
	if !deleted {
		// json v2 (go-json-experiment, as internal/strictjson): it reads
		// a record in about half the time of encoding/json, and this runs
		// for every write of every task.
		if err := jsonv2.Unmarshal(value, &h); err != nil || h.ID != id {
			return // not a record: nothing to list
		}
		if _, known := stateSlot[h.State]; !known {
			return
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.loaded.Add(1)
	old := x.byID[id]
	if old != nil && old.rev >= rev {
		return
	}
	if deleted {
		if old != nil {
			x.remove(old)
		}
		x.subs.deleted(id, rev)
		return
	}
	if h.Queue == "" {
		h.Queue = task.DefaultQueue
	}
	e := &indexEntry{
		owner: x.num(h.Owner), typ: x.num(h.Type), queue: x.num(h.Queue), state: uint8(stateSlot[h.State]),
		attempts: clampU16(h.Attempts), maxAttempts: clampU16(h.MaxAttempts), generation: clampU16(h.Generation),
		progress: uint8(min(max(h.Progress, 0), 100)), errMsg: task.Truncate(h.Error, maxIndexedError),
		created: h.CreatedAt.UnixNano(), updated: h.UpdatedAt.UnixNano(), rev: rev,
	}
	if old != nil {
		e.id = old.id
	} else {
		e.id = strings.Clone(id) // not the watch's subject it is cut from
	}
	switch {
	case old == nil:
		x.insert(e)
	case old.state == e.state && old.created == e.created && old.owner == e.owner && old.typ == e.typ && old.queue == e.queue:
		// Progress, attempts, error: same trees, same counters.
		*old = *e
		e = old
	default:
		x.remove(old)
		x.insert(e)
	}
	x.subs.changed(x, e, value)
}

// insert adds e to the map, its trees and the counters.
func (x *taskIndex) insert(e *indexEntry) {
	x.byID[e.id] = e
	keys, n := e.trees()
	for _, k := range keys[:n] {
		t := x.trees[k]
		if t == nil {
			t = btree.NewG(32, (*indexEntry).less)
			x.trees[k] = t
		}
		t.ReplaceOrInsert(e)
	}
	tk, tn := e.totalsKeys()
	for _, k := range tk[:tn] {
		c := x.totals[k]
		if c == nil {
			c = new(stateCounts)
			x.totals[k] = c
		}
		c[e.state]++
	}
}

// remove takes e out of the map, its trees and the counters.
func (x *taskIndex) remove(e *indexEntry) {
	delete(x.byID, e.id)
	keys, n := e.trees()
	for _, k := range keys[:n] {
		if t := x.trees[k]; t != nil {
			t.Delete(e)
			if t.Len() == 0 {
				delete(x.trees, k)
			}
		}
	}
	tk, tn := e.totalsKeys()
	for _, k := range tk[:tn] {
		if c := x.totals[k]; c != nil {
			c[e.state]--
			if *c == (stateCounts{}) {
				delete(x.totals, k)
			}
		}
	}
}

// trees names the trees e is in: every task's and its state's, for every
// owner and for its own (a record without an owner has only the first
// two: only tasks:admin sees it). Arrays, not slices: apply runs for every
// write of every task.
func (e *indexEntry) trees() ([4]treeKey, int) {
	st := e.state + 1
	keys := [4]treeKey{{0, 0}, {0, st}, {e.owner, 0}, {e.owner, st}}
	if e.owner == 0 {
		return keys, 2
	}
	return keys, 4
}

// totalsKeys names the counters e counts in: each of owner, type and
// queue, or "any".
func (e *indexEntry) totalsKeys() ([8]totalsKey, int) {
	var ks [8]totalsKey
	n := 0
	for _, o := range [2]uint32{0, e.owner} {
		for _, t := range [2]uint32{0, e.typ} {
			for _, q := range [2]uint32{0, e.queue} {
				ks[n] = totalsKey{o, t, q}
				n++
			}
		}
		if e.owner == 0 {
			break
		}
	}
	return ks, n
}

// clampU16 keeps n in a uint16 (attempts and generations are small).
func clampU16(n int) uint16 { return uint16(min(max(n, 0), 65535)) }

// sweep drops the entries whose records the bucket has expired: last
// written more than its TTL ago (with a minute's slack for clocks). An
// entry is no older than it was created, so the walk starts at the oldest
// and stops at the first created within the TTL. It walks in batches, so
// that listings run between them.
func (x *taskIndex) sweep(now time.Time) {
	if x.ttl <= 0 {
		return
	}
	cutoff := now.Add(-x.ttl - time.Minute).UnixNano()
	var resume *indexEntry // the last entry the previous batch looked at
	for {
		x.mu.Lock()
		var old []*indexEntry
		var last *indexEntry
		seen := 0
		visit := func(e *indexEntry) bool { // oldest first
			if e.created >= cutoff || seen == 1000 {
				return false
			}
			if resume != nil && !e.less(resume) {
				return true // resume itself, looked at already
			}
			seen++
			last = e
			if e.updated < cutoff {
				old = append(old, e)
			}
			return true
		}
		if t := x.trees[treeKey{}]; t != nil {
			if resume != nil {
				t.DescendLessOrEqual(resume, visit)
			} else {
				t.Descend(visit)
			}
		}
		for _, e := range old {
			x.remove(e)
		}
		x.mu.Unlock()
		if seen < 1000 {
			return
		}
		resume = &indexEntry{created: last.created, id: last.id}
	}
}

// Totals counts the tasks per state of owner ("" for every owner), of type
// typ and on queue ("" for any), for GET /queues; nil while the index
// loads.
func (x *taskIndex) Totals(owner, typ, queue string) map[task.State]int {
	x.use()
	if !x.ready.Load() {
		return nil // loading: no counts yet
	}
	x.mu.RLock()
	var counts stateCounts
	if k, ok := x.totalsKey(owner, typ, queue); ok {
		if c := x.totals[k]; c != nil {
			counts = *c
		}
	}
	x.mu.RUnlock()
	out := make(map[task.State]int, len(slotStates))
	for i, s := range slotStates {
		out[s] = counts[i]
	}
	return out
}

// totalsKey returns the key of the counters of owner, typ and queue, and
// false when one of them is a name no record had.
func (x *taskIndex) totalsKey(owner, typ, queue string) (totalsKey, bool) {
	o, ok1 := x.lookup(owner)
	t, ok2 := x.lookup(typ)
	q, ok3 := x.lookup(queue)
	return totalsKey{o, t, q}, ok1 && ok2 && ok3
}

// listQuery is a page GET /tasks asks for.
type listQuery struct {
	owner      string     // "": every owner's (tasks:admin)
	state      task.State // "": any
	typ, queue string     // "": any
	limit      int
	after      *indexEntry // the cursor: the page starts after it; nil: at the newest
}

// listPage is what a listQuery finds.
type listPage struct {
	tasks  []taskSummary
	next   *indexEntry // where the next page starts; nil on the last page
	totals stateCounts // of owner, type and queue, any state
}

// list answers q. It returns errIndexLoading until the index has read
// the bucket.
func (x *taskIndex) list(q listQuery) (listPage, error) {
	if !x.ready.Load() {
		return listPage{}, errIndexLoading
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	var page listPage
	key, known := x.totalsKey(q.owner, q.typ, q.queue)
	if !known {
		return page, nil // a name no record had: nothing matches
	}
	if c := x.totals[key]; c != nil {
		page.totals = *c
	}
	tk := treeKey{owner: key.owner}
	if q.state != "" {
		tk.state = uint8(stateSlot[q.state]) + 1
	}
	t := x.trees[tk]
	if t == nil {
		return page, nil
	}
	page.tasks = make([]taskSummary, 0, min(q.limit, t.Len()))
	budget := indexScanBudget
	var last *indexEntry
	visit := func(e *indexEntry) bool {
		if q.after != nil && !q.after.less(e) {
			return true // the cursor's own entry
		}
		if len(page.tasks) == q.limit {
			page.next = last // there is more after the last one shown
			return false
		}
		last = e
		if (key.typ == 0 || e.typ == key.typ) && (key.queue == 0 || e.queue == key.queue) {
			page.tasks = append(page.tasks, x.summary(e))
			return true
		}
		if budget--; budget == 0 {
			page.next = e // out of budget: the next page resumes here
			return false
		}
		return true
	}
	if q.after != nil {
		t.AscendGreaterOrEqual(q.after, visit)
	} else {
		t.Ascend(visit)
	}
	if page.next != nil {
		page.next = &indexEntry{created: page.next.created, id: page.next.id} // a copy: the entry may change
	}
	return page, nil
}
