package task

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The task-type registry (issue #25): which task types and queues exist,
// and which workers are alive to serve them. docs/TASKS-WIRE.md is its
// contract for workers written in other languages.
const (
	// RegistryBucket holds the definitions of task types, under
	// "types.<name>" (a TypeDef), and of queues, under "queues.<name>" (a
	// QueueDef). Kept until replaced: a type stays registered, and its
	// tasks stay queued, while no worker serving it is alive.
	RegistryBucket = "task_registry"
	// WorkersBucket holds one WorkerInfo per live worker, under its id.
	// A worker writes it every AnnounceEvery; the bucket forgets it
	// WorkerTTL after its last write, so what the bucket holds is the
	// workers alive now.
	WorkersBucket = "task_workers"
	// TypeKeyPrefix and QueueKeyPrefix prefix a name to make its key in
	// RegistryBucket.
	TypeKeyPrefix  = "types."
	QueueKeyPrefix = "queues."
)

// AnnounceEvery is how often a worker writes its WorkerInfo, and
// WorkerTTL how long after its last write it counts as alive.
const (
	AnnounceEvery = 5 * time.Second
	WorkerTTL     = 3 * AnnounceEvery
)

// TypeDef is a registered task type: what a worker announces it serves.
// Only Name is required.
type TypeDef struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Schema is a JSON Schema (draft 2020-12 unless it says otherwise)
	// of the task's payload: the body of POST /longtask without its
	// reserved members ("task", "queue", "run_at", "delay"). The gateway
	// refuses a payload it does not accept. None: any JSON object.
	Schema json.RawMessage `json:"schema,omitempty"`
	// Queue is the queue of a task of this type whose submission names
	// none; "" is DefaultQueue.
	Queue string `json:"queue,omitempty"`
	// MaxAttempts and TimeoutMS are the type's limits, copied into each
	// task's record at submission; 0 leaves them to the worker's flags.
	MaxAttempts int   `json:"max_attempts,omitempty"`
	TimeoutMS   int64 `json:"timeout_ms,omitempty"`
	// Unique, when set, makes tasks of this type unique: a submission
	// that matches one made within the window returns the first's id.
	Unique    *Unique   `json:"unique,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Unique says which tasks of a type are the same task (River's unique
// jobs).
type Unique struct {
	// Keys are the payload members compared; none compares the whole
	// payload.
	Keys []string `json:"keys,omitempty"`
	// WindowMS is the window, in milliseconds: windows are aligned to
	// multiples of it since the Unix epoch, as River's ByPeriod.
	WindowMS int64 `json:"window_ms"`
}

// QueueDef is a queue: tasks on it are stored on tasks.<name>.<type> and
// pulled through the durable consumer QueueConsumer(name).
type QueueDef struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Paused, set by SetPaused (POST /queues/{name}/pause), tells every
	// worker to stop pulling from the queue: its tasks stay queued, and
	// submissions to it are still accepted, until it is resumed. Tasks
	// already running finish. PausedAt is when it was paused.
	Paused   bool       `json:"paused,omitempty"`
	PausedAt *time.Time `json:"paused_at,omitempty"`
}

// WorkerInfo is what a live worker announces about itself.
type WorkerInfo struct {
	ID          string    `json:"id"`
	Types       []string  `json:"types"`
	Queues      []string  `json:"queues"`
	Concurrency int       `json:"concurrency"`
	SDK         string    `json:"sdk,omitempty"` // e.g. "go", "python"
	StartedAt   time.Time `json:"started_at"`
	SeenAt      time.Time `json:"seen_at"`
}

// BuiltinQueues are the queues every platform has, in priority order.
var BuiltinQueues = []string{"critical", DefaultQueue, "low"}

// BuiltinTypes are the task types scalelab ships (the worker role's
// handlers), registered by the provisioner as a worker registers its own.
func BuiltinTypes() []TypeDef {
	sleepSchema := json.RawMessage(fmt.Sprintf(
		`{"type":"object","properties":{"duration_ms":{"type":"integer","minimum":0,"maximum":%d}}}`, MaxSleep.Milliseconds()))
	return []TypeDef{
		{Name: "noop", Description: "does nothing and succeeds", Schema: json.RawMessage(`{"type":"object"}`)},
		{Name: "report", Description: "the lab's long task: works for --report-duration, reporting progress", Schema: json.RawMessage(`{"type":"object"}`)},
		{Name: "sleep", Description: "sleeps for duration_ms", Schema: sleepSchema},
		{Name: "tally", Description: "sleeps for duration_ms, then records the run on " + ExecStream + " before it returns (chaos runs count runs with it)",
			Schema: sleepSchema},
	}
}

// ErrUnknownName is returned by Registry.Type and Registry.Queue for a
// name that is not registered.
var ErrUnknownName = errors.New("task: not registered")

// Registry reads and writes the task-type registry.
type Registry struct {
	defs, workers jetstream.KeyValue
}

// OpenRegistry binds the registry's buckets. It returns an error wrapping
// ErrNotProvisioned while they do not exist.
func OpenRegistry(ctx context.Context, js jetstream.JetStream) (*Registry, error) {
	var r Registry
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{RegistryBucket, &r.defs}, {WorkersBucket, &r.workers}} {
		kv, err := js.KeyValue(ctx, b.name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("open bucket %s: %w", b.name, ErrNotProvisioned)
		}
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	return &r, nil
}

// provisionRegistry creates the registry's buckets and registers the
// built-in queues and types. It is idempotent.
func provisionRegistry(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (*Registry, error) {
	for _, c := range []jetstream.KeyValueConfig{
		{Bucket: RegistryBucket, Description: "scalelab task types and queues", History: 1,
			Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
		{Bucket: WorkersBucket, Description: "scalelab live workers, each forgotten WorkerTTL after its last announcement",
			History: 1, TTL: WorkerTTL, Storage: jetstream.FileStorage, Replicas: cfg.Replicas},
	} {
		if _, err := js.KeyValue(ctx, c.Bucket); err == nil {
			continue
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return nil, fmt.Errorf("provision bucket %s: %w", c.Bucket, err)
		}
	}
	r, err := OpenRegistry(ctx, js)
	if err != nil {
		return nil, err
	}
	for _, q := range BuiltinQueues {
		if err := r.PutQueue(ctx, q); err != nil {
			return nil, err
		}
	}
	for _, d := range BuiltinTypes() {
		if err := r.PutType(ctx, d); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// PutType registers d, or replaces its registration. It writes nothing
// when the registration is already d (UpdatedAt aside), so that workers
// announcing the same type at each start do not churn the bucket. The
// queue d names, if any, is registered too.
func (r *Registry) PutType(ctx context.Context, d TypeDef) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Queue != "" {
		if err := r.PutQueue(ctx, d.Queue); err != nil {
			return err
		}
	}
	if cur, err := r.Type(ctx, d.Name); err == nil && sameTypeDef(*cur, d) {
		return nil
	}
	d.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("register task type %s: %w", d.Name, err)
	}
	if _, err := r.defs.Put(ctx, TypeKeyPrefix+d.Name, b); err != nil {
		return fmt.Errorf("register task type %s: %w", d.Name, err)
	}
	return nil
}

// Validate checks a type definition's names and limits; a bad schema is
// found where it is compiled (the gateway).
func (d TypeDef) Validate() error {
	switch {
	case !ValidName(d.Name):
		return fmt.Errorf("%w: task type name %q must be 1-%d letters, digits, '_' or '-'", ErrInvalid, Truncate(d.Name, 40), MaxNameLen)
	case d.Queue != "" && !ValidName(d.Queue):
		return fmt.Errorf("%w: task type %s: queue name %q must be 1-%d letters, digits, '_' or '-'", ErrInvalid, d.Name, Truncate(d.Queue, 40), MaxNameLen)
	case d.MaxAttempts < 0 || d.TimeoutMS < 0:
		return fmt.Errorf("%w: task type %s: max_attempts and timeout_ms must not be negative", ErrInvalid, d.Name)
	case d.Unique != nil && d.Unique.WindowMS <= 0:
		return fmt.Errorf("%w: task type %s: a unique window must be positive", ErrInvalid, d.Name)
	case len(d.Schema) > 0 && !json.Valid(d.Schema):
		return fmt.Errorf("%w: task type %s: its schema is not JSON", ErrInvalid, d.Name)
	}
	return nil
}

// sameTypeDef compares two definitions, UpdatedAt aside.
func sameTypeDef(a, b TypeDef) bool {
	a.UpdatedAt, b.UpdatedAt = time.Time{}, time.Time{}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// Type returns the registration of the type name, or ErrUnknownName.
func (r *Registry) Type(ctx context.Context, name string) (*TypeDef, error) {
	var d TypeDef
	if err := r.get(ctx, TypeKeyPrefix, name, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// PutQueue registers the queue name; registering it again changes nothing.
func (r *Registry) PutQueue(ctx context.Context, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: queue name %q must be 1-%d letters, digits, '_' or '-'", ErrInvalid, Truncate(name, 40), MaxNameLen)
	}
	b, err := json.Marshal(QueueDef{Name: name, CreatedAt: time.Now().UTC()})
	if err != nil {
		return fmt.Errorf("register queue %s: %w", name, err)
	}
	if _, err := r.defs.Create(ctx, QueueKeyPrefix+name, b); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("register queue %s: %w", name, err)
	}
	return nil
}

// Queue returns the queue name, or ErrUnknownName.
func (r *Registry) Queue(ctx context.Context, name string) (*QueueDef, error) {
	var q QueueDef
	if err := r.get(ctx, QueueKeyPrefix, name, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// SetPaused pauses (paused true) or resumes the queue name and returns
// its definition as written. It compares and sets: the definition is
// read, changed and written only if nobody wrote it since (else it is
// read again), so a pause never undoes a concurrent change. A queue
// already in that state is returned as it is, unwritten. It returns an
// error wrapping ErrUnknownName for a queue that is not registered.
func (r *Registry) SetPaused(ctx context.Context, name string, paused bool) (*QueueDef, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%s%q: %w", QueueKeyPrefix, Truncate(name, 40), ErrUnknownName)
	}
	key := QueueKeyPrefix + name
	var lastErr error
	for range maxUpdateTries {
		e, err := r.defs.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%s: %w", key, ErrUnknownName)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		var q QueueDef
		if err := json.Unmarshal(e.Value(), &q); err != nil {
			return nil, fmt.Errorf("decode %s: %w", key, err)
		}
		if q.Paused == paused {
			return &q, nil
		}
		q.Paused, q.PausedAt = paused, nil
		if paused {
			now := time.Now().UTC()
			q.PausedAt = &now
		}
		b, err := json.Marshal(q)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", key, err)
		}
		_, err = r.defs.Update(ctx, key, b, e.Revision())
		if err == nil {
			return &q, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("write %s: %w", key, err)
		}
		lastErr = err // written by someone else since the read: read it again
	}
	return nil, fmt.Errorf("write %s: gave up after %d conflicting writes: %w", key, maxUpdateTries, lastErr)
}

// WatchQueues watches the queues' definitions (the keys queues.*): the
// current ones first, then a nil entry, then every change. Workers watch
// it to stop pulling from a paused queue at once.
func (r *Registry) WatchQueues(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := r.defs.Watch(ctx, QueueKeyPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("watch %s%s: %w", RegistryBucket, "/"+QueueKeyPrefix+"*", err)
	}
	return w, nil
}

// Types returns every registered type, sorted by name.
func (r *Registry) Types(ctx context.Context) ([]TypeDef, error) {
	return list[TypeDef](ctx, r.defs, TypeKeyPrefix, func(d TypeDef) string { return d.Name })
}

// Queues returns every registered queue, sorted by name.
func (r *Registry) Queues(ctx context.Context) ([]QueueDef, error) {
	return list[QueueDef](ctx, r.defs, QueueKeyPrefix, func(q QueueDef) string { return q.Name })
}

// Announce records that the worker w is alive (see WorkersBucket).
func (r *Registry) Announce(ctx context.Context, w WorkerInfo) error {
	if w.ID == "" || len(w.ID) > 255 {
		return fmt.Errorf("%w: a worker id must be 1-255 bytes", ErrInvalid)
	}
	w.SeenAt = time.Now().UTC()
	b, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("announce worker %s: %w", w.ID, err)
	}
	if _, err := r.workers.Put(ctx, WorkerKey(w.ID), b); err != nil {
		return fmt.Errorf("announce worker %s: %w", w.ID, err)
	}
	return nil
}

// Retire forgets the worker id at once, as it stops.
func (r *Registry) Retire(ctx context.Context, id string) error {
	if err := r.workers.Delete(ctx, WorkerKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("retire worker %s: %w", id, err)
	}
	return nil
}

// WorkerKey is the key of the worker id in WorkersBucket: the id itself
// when it is a ValidName, else the id with every other byte replaced by
// '_' and an FNV-1a hash of the whole id appended, so that ids such as
// "host.example:8080/worker-1" stay readable in `nats kv ls task_workers`
// and two ids never share a key by accident.
func WorkerKey(id string) string {
	if ValidName(id) {
		return id
	}
	b := []byte(id)
	for i, c := range b {
		if !ValidName(string(c)) {
			b[i] = '_'
		}
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return fmt.Sprintf("%.200s-%08x", b, h.Sum32())
}

// Workers returns the live workers, sorted by id.
func (r *Registry) Workers(ctx context.Context) ([]WorkerInfo, error) {
	return list[WorkerInfo](ctx, r.workers, "", func(w WorkerInfo) string { return w.ID })
}

// get reads the value of prefix+name into v.
func (r *Registry) get(ctx context.Context, prefix, name string, v any) error {
	if !ValidName(name) {
		return fmt.Errorf("%s%q: %w", prefix, Truncate(name, 40), ErrUnknownName)
	}
	e, err := r.defs.Get(ctx, prefix+name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%s%s: %w", prefix, name, ErrUnknownName)
	}
	if err != nil {
		return fmt.Errorf("read %s%s: %w", prefix, name, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return fmt.Errorf("decode %s%s: %w", prefix, name, err)
	}
	return nil
}

// list reads every value under prefix in kv, sorted by key. A value that
// does not decode is skipped: one bad entry must not hide the others.
func list[T any](ctx context.Context, kv jetstream.KeyValue, prefix string, key func(T) string) ([]T, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	var out []T
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted or expired since it was listed
		}
		var v T
		if json.Unmarshal(e.Value(), &v) == nil {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return out, nil
}
