package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/natsconn"
)

// ErrNotFound is returned when no record exists for a task id.
var ErrNotFound = errors.New("task: not found")

// ErrExists is returned by Store.Create when the id is taken.
var ErrExists = errors.New("task: already exists")

// ErrFull is returned by Store.Create when the tasks bucket holds as many
// bytes of records as it takes new ones (see ProvisionConfig.MaxRecordBytes).
var ErrFull = errors.New("task: the tasks bucket is full")

// ErrNoSpace is returned by Store.Create when JetStream refuses the write
// for want of storage: the server's or the account's store limit, which
// `scalelab up` keeps under what its disk holds (natsconf.GuardStore).
// Unlike ErrFull it is not the tasks bucket's own limit, and it passes
// once space returns, without a restart.
var ErrNoSpace = errors.New("task: the JetStream store is out of space")

// NoSpace reports whether err is JetStream refusing a write because its
// storage is exhausted: the server's store limit ("insufficient
// resources", 10023), the account's ("resource limits exceeded for
// account", 10002), no room to reserve a stream's bytes ("insufficient
// storage resources available", 10047), or a store error that is a full
// disk. A stream's own byte or message limit is not one (overLimit).
func NoSpace(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case 10002, 10023, 10047:
		return true
	}
	return strings.Contains(apiErr.Description, "no space left")
}

// ProvisionConfig sizes the stream and bucket.
type ProvisionConfig struct {
	// Replicas is 1 on a single server and 3 on a cluster.
	Replicas int
	// Retention is how long task records are kept after their last update.
	Retention time.Duration
	// MaxQueueBytes and MaxQueueMsgs cap the stream (0: no cap on
	// messages); when full, submission fails loudly (DiscardNew) instead of
	// dropping old tasks.
	MaxQueueBytes int64
	MaxQueueMsgs  int64
	// DedupeWindow is how long a repeated Nats-Msg-Id is ignored.
	DedupeWindow time.Duration
	// MaxRecordBytes caps the tasks bucket (its MaxBytes). New records
	// are taken only while the bucket holds less than half of it: the
	// other half is the room that tasks already accepted need to record
	// their progress and outcome (a record grows as it runs, and a full
	// bucket refuses a write that grows one). So a full bucket refuses new
	// tasks (Store.Create's ErrFull), never an accepted task's result.
	MaxRecordBytes int64
}

// DefaultProvisionConfig is the single-server configuration.
func DefaultProvisionConfig() ProvisionConfig {
	return ProvisionConfig{Replicas: 1, Retention: 24 * time.Hour, MaxQueueBytes: 1 << 30, DedupeWindow: 2 * time.Minute, MaxRecordBytes: 1 << 30}
}

// RegisterFlags defines the flags that size the stream and bucket:
// `scalelab tasks provision` applies them; the gateway and the worker
// have them too, and warn at start when the streams were provisioned
// otherwise (see Open).
func (p *ProvisionConfig) RegisterFlags(s *envflag.Set) {
	s.Int64(&p.MaxQueueMsgs, "max-queue", "SCALELAB_MAX_QUEUE", p.MaxQueueMsgs, "most tasks the TASKS stream holds; past it POST /longtask answers 429 (0: no limit; applied by scalelab tasks provision and up, checked by gateways and workers)")
	s.Int64(&p.MaxRecordBytes, "max-task-bytes", "SCALELAB_MAX_TASK_BYTES", p.MaxRecordBytes, "most bytes of task records the tasks bucket holds; past half of it POST /longtask answers 503 store_full, the rest is kept for accepted tasks to finish (applied by scalelab tasks provision and up; gateways read it from the bucket)")
	s.Int(&p.Replicas, "replicas", "SCALELAB_REPLICAS", p.Replicas, "JetStream replicas of the task streams and bucket (3 on a cluster; applied by scalelab tasks provision, checked by gateways and workers)")
}

// Validate reports every bad setting, naming the role.
func (p ProvisionConfig) Validate(role string) error {
	var errs []error
	if p.MaxQueueMsgs < 0 {
		errs = append(errs, fmt.Errorf("%s: --max-queue must not be negative, got %d", role, p.MaxQueueMsgs))
	}
	if p.MaxRecordBytes < minRecordBytes {
		errs = append(errs, fmt.Errorf("%s: --max-task-bytes must be at least %d, got %d", role, minRecordBytes, p.MaxRecordBytes))
	}
	if p.Replicas < 1 || p.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%s: --replicas must be 1..5, got %d", role, p.Replicas))
	}
	return errors.Join(errs...)
}

// minRecordBytes is the smallest MaxRecordBytes: room for a few of the
// largest records (a payload is up to MaxPayloadBytes).
const minRecordBytes = 4 * MaxPayloadBytes

// Provision creates or updates the TASKS stream and the tasks bucket, and
// returns a Store over the bucket. Only their provisioner calls it, as
// admin: `scalelab up` before the roles start, `scalelab tasks provision`
// elsewhere (compose runs it once, before the gateways and workers). The
// roles themselves only Open them. It also provisions the task-type
// registry (RegistryBucket, WorkersBucket) with the built-in queues and
// types, and deletes the consumer the workers shared before queues
// (Consumer). It is idempotent.
func Provision(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (*Store, error) {
	for _, want := range streamConfigs(cfg) {
		if err := ensureStream(ctx, js, want); err != nil {
			return nil, err
		}
	}
	// The consumer all workers shared before queues (Consumer, on every
	// subject of TASKS) would overlap the queues' consumers, which the
	// server refuses on a work-queue stream. The tasks it had not handed
	// out stay in the stream and go to the queues' consumers.
	if err := js.DeleteConsumer(ctx, Stream, Consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("provision: delete the consumer %s of %s (replaced by one per queue): %w", Consumer, Stream, err)
	}
	if _, err := provisionRegistry(ctx, js, cfg); err != nil {
		return nil, err
	}
	if err := provisionSchedules(ctx, js); err != nil {
		return nil, err
	}
	if kv, err := js.KeyValue(ctx, Bucket); err == nil {
		if st, err := kv.Status(ctx); err == nil && st.TTL() == cfg.Retention && st.History() == 1 && sameLimit(bucketMaxBytes(st), cfg.MaxRecordBytes) {
			return leaderReads(ctx, js) // as wanted: no update (see ensureStream)
		}
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "scalelab task records by id",
		History:     1,
		TTL:         cfg.Retention,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxBytes:    cfg.MaxRecordBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", Bucket, err)
	}
	return leaderReads(ctx, js)
}

// bucketMaxBytes is the byte limit of a bucket, or -1 when it has none.
func bucketMaxBytes(st jetstream.KeyValueStatus) int64 {
	if b, ok := st.(*jetstream.KeyValueBucketStatus); ok && b.StreamInfo() != nil {
		return b.StreamInfo().Config.MaxBytes
	}
	return -1
}

// leaderReads turns direct gets off on the bucket's stream
// (natsconn.LeaderReads) and returns a Store bound to it. The task
// pipeline reads its own writes (the worker reads the record the gateway
// has just created, and Update is a compare-and-set loop), so it reads
// through the stream leader. It returns an error if the stream cannot be
// read or updated.
func leaderReads(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	if err := natsconn.LeaderReads(ctx, js, Bucket); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	// Bind after the update: a handle decides at bind time whether it
	// uses direct gets.
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}

// streamConfigs are the streams of the task pipeline, in the order they
// must be created: TASKS sources TASKS_DELAYED. SCHEDULES (schedule.go)
// and TASKS_EXEC (exec.go) stand alone.
func streamConfigs(cfg ProvisionConfig) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:              DelayedStream,
			Description:       "scalelab delayed tasks: schedules, and tasks once due",
			Subjects:          []string{DelayedAtPrefix + ">", DelayedDuePrefix + ">"},
			Retention:         jetstream.LimitsPolicy,
			Storage:           jetstream.FileStorage,
			Replicas:          cfg.Replicas,
			MaxAge:            MaxDelay + 24*time.Hour,
			MaxBytes:          cfg.MaxQueueBytes,
			Duplicates:        cfg.DedupeWindow,
			AllowMsgSchedules: true,
		},
		{
			Name:        Stream,
			Description: "scalelab async tasks, one subject per task type",
			Subjects:    []string{SubjectPrefix + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxBytes:    cfg.MaxQueueBytes,
			MaxMsgs:     maxOrUnlimited(cfg.MaxQueueMsgs),
			MaxMsgSize:  MaxPayloadBytes + 4<<10,
			Discard:     jetstream.DiscardNew,
			Duplicates:  cfg.DedupeWindow,
			// Delayed tasks come in from TASKS_DELAYED once due.
			Sources: []*jetstream.StreamSource{{
				Name: DelayedStream,
				SubjectTransforms: []jetstream.SubjectTransformConfig{{
					Source: DelayedDuePrefix + ">", Destination: SubjectPrefix + ">",
				}},
			}},
		},
		{
			Name:        DLQStream,
			Description: "scalelab dead letters: tasks that used up their attempts",
			Subjects:    []string{DLQSubjectPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			MaxAge:      7 * 24 * time.Hour,
			MaxBytes:    cfg.MaxQueueBytes,
			Discard:     jetstream.DiscardOld,
			Duplicates:  cfg.DedupeWindow,
		},
		scheduleStreamConfig(cfg),
		execStreamConfig(cfg),
	}
}

// ensureStream creates the stream, or updates it when a field that want
// sets differs. Every gateway and worker provisions at start, so the
// common case is "already as wanted": skipping the update then is cheaper,
// and it avoids concurrent identical updates, which race inside
// nats-server 2.15 (its data race detector reports it).
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Created meanwhile by another role; check it is as wanted.
			return ensureStream(ctx, js, want)
		}
	case err == nil:
		if sameStreamConfig(s.CachedInfo().Config, want) {
			return nil
		}
		_, err = js.UpdateStream(ctx, want)
	}
	if err != nil {
		return fmt.Errorf("provision stream %s: %w", want.Name, err)
	}
	return nil
}

// sameStreamConfig compares the fields Provision sets.
func sameStreamConfig(cur, want jetstream.StreamConfig) bool {
	sources := func(ss []*jetstream.StreamSource) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
			for _, t := range s.SubjectTransforms {
				out = append(out, t.Source+"→"+t.Destination)
			}
		}
		return out
	}
	// The server stores "no limit" as -1 and an unset dedupe window as its
	// default (2 min).
	limit := sameLimit
	return cur.Description == want.Description && slices.Equal(cur.Subjects, want.Subjects) &&
		cur.Retention == want.Retention && cur.Storage == want.Storage && cur.Replicas == want.Replicas &&
		cur.MaxAge == want.MaxAge && limit(cur.MaxBytes, want.MaxBytes) &&
		limit(int64(cur.MaxMsgSize), int64(want.MaxMsgSize)) && limit(cur.MaxMsgs, want.MaxMsgs) &&
		cur.Discard == want.Discard && (cur.Duplicates == want.Duplicates || want.Duplicates == 0) &&
		cur.AllowMsgSchedules == want.AllowMsgSchedules && cur.AllowMsgTTL == want.AllowMsgTTL &&
		limit(cur.MaxMsgsPerSubject, want.MaxMsgsPerSubject) && slices.Equal(sources(cur.Sources), sources(want.Sources))
}

// sameLimit compares two byte or message limits, where any value under 1
// means none (the server stores "none" as -1).
func sameLimit(a, b int64) bool { return a == b || (a <= 0 && b <= 0) }

func maxOrUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Store reads and writes task records.
type Store struct {
	kv jetstream.KeyValue

	// What Create last read of the bucket (see roomFor).
	mu     sync.Mutex
	used   uint64    // the bucket's bytes
	limit  uint64    // half its byte limit, up to which Create adds records; 0: no limit
	usedAt time.Time // when they were read
	added  uint64    // bytes this Store created since
}

// msgOverhead is about what the bucket stores for a record beyond its JSON:
// its subject ($KV.tasks.<id>) and the message's framing.
const msgOverhead = 80

// usageMaxAge is how long Create trusts its last reading of the bucket's
// size.
const usageMaxAge = time.Second

// NewStore returns a Store over an existing bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Create stores a new record and returns its revision. It returns
// ErrExists if the id is taken, ErrFull if the bucket holds its limit
// of records for new tasks (half its byte limit) or refuses the write as
// over that limit, and ErrNoSpace if JetStream's store is full.
func (s *Store) Create(ctx context.Context, rec *Record) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("encode task %s: %w", rec.ID, err)
	}
	if err := s.roomFor(ctx, len(b)+msgOverhead); err != nil {
		return 0, fmt.Errorf("create task %s: %w", rec.ID, err)
	}
	rev, err := s.kv.Create(ctx, rec.ID, b)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("create task %s: %w", rec.ID, ErrExists)
		}
		if overLimit(err) {
			return 0, fmt.Errorf("create task %s: %w: %w", rec.ID, ErrFull, err)
		}
		if NoSpace(err) {
			return 0, fmt.Errorf("create task %s: %w: %w", rec.ID, ErrNoSpace, err)
		}
		return 0, fmt.Errorf("create task %s: %w", rec.ID, err)
	}
	return rev, nil
}

// roomFor returns ErrFull if a record of n bytes would take the bucket
// past half of its byte limit (ProvisionConfig.MaxRecordBytes), and
// otherwise counts n as added. The limit is the bucket's own, read with
// its size, so every Store keeps it, whoever provisioned the bucket. It
// reads them (one request to the stream leader) unless its last reading is
// under usageMaxAge old and this Store has since added less than a
// sixteenth of the room that was left then: far from the limit, a reading
// serves thousands of creates; near it, every create reads. Other gateways
// add records between readings too, so the bucket can pass the half by up
// to a sixteenth of the room per gateway; the other half, kept for
// accepted tasks, absorbs that.
func (s *Store) roomFor(ctx context.Context, n int) error {
	s.mu.Lock()
	used, limit, at, added := s.used, s.limit, s.usedAt, s.added
	s.mu.Unlock()
	room := limit - min(used, limit)
	if time.Since(at) > usageMaxAge || (limit > 0 && added+uint64(n) > room/16) {
		st, err := s.kv.Status(ctx)
		if err != nil {
			return fmt.Errorf("read size of bucket %s: %w", Bucket, err)
		}
		used, limit, added = st.Bytes(), 0, 0
		if m := bucketMaxBytes(st); m > 0 {
			limit = uint64(m) / 2
		}
		s.mu.Lock()
		s.used, s.limit, s.usedAt, s.added = used, limit, time.Now(), 0
		s.mu.Unlock()
	}
	if limit == 0 {
		return nil // a bucket without a limit (made before it had one)
	}
	if used+added+uint64(n) > limit {
		return fmt.Errorf("%w: it holds %d bytes of records, new tasks are taken up to %d", ErrFull, used+added, limit)
	}
	s.mu.Lock()
	s.added += uint64(n)
	s.mu.Unlock()
	return nil
}

// overLimit reports the server refusing a write because the bucket is at
// its byte or message limit (JSStreamStoreFailedF, "maximum bytes
// exceeded", which nats.go does not name).
func overLimit(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == 10077 && strings.Contains(apiErr.Description, "maximum")
}

// Get returns the record of id and its revision. It returns ErrNotFound
// when there is none.
func (s *Store) Get(ctx context.Context, id string) (*Record, uint64, error) {
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, fmt.Errorf("get task %s: %w", id, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("get task %s: %w", id, err)
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("decode task %s: %w", id, err)
	}
	return &rec, e.Revision(), nil
}

// Delete removes the record of id; deleting a missing record is not an error.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	return nil
}

// maxUpdateTries bounds the compare-and-set loop; contention on one task
// record is rare (one worker and an occasional cancel), so a few tries do.
const maxUpdateTries = 10

// Update applies fn to the current record of id and stores the result with
// compare-and-set, retrying when another writer got there first, so two
// writers never clobber each other. fn may be called more than once. If fn
// returns an error, nothing is written and that error is returned.
func (s *Store) Update(ctx context.Context, id string, fn func(*Record) error) (*Record, error) {
	v, err := s.UpdateFrom(ctx, id, nil, fn)
	if err != nil {
		return nil, err
	}
	return v.Record, nil
}

// Version is a record as a writer last read or wrote it, with its
// revision.
type Version struct {
	Record *Record
	Rev    uint64
}

// UpdateFrom is Update starting from last, the version of the record the
// caller wrote (or read) before, and returns the version it writes. When
// nobody has written since, it saves Update's read: a worker finishing a
// task it marked running writes once instead of reading and writing. When
// somebody has (a cancel, a progress report), the compare-and-set fails
// and it reads, as Update does. A nil last is Update.
func (s *Store) UpdateFrom(ctx context.Context, id string, last *Version, fn func(*Record) error) (*Version, error) {
	var lastErr error
	for range maxUpdateTries {
		var rec *Record
		var rev uint64
		if last != nil {
			cp := *last.Record // fn changes its record; last stays as it was
			rec, rev, last = &cp, last.Rev, nil
		} else {
			var err error
			if rec, rev, err = s.Get(ctx, id); err != nil {
				return nil, err
			}
		}
		if err := fn(rec); err != nil {
			return nil, err
		}
		rec.UpdatedAt = time.Now().UTC()
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("encode task %s: %w", id, err)
		}
		newRev, err := s.kv.Update(ctx, id, b, rev)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				lastErr = err
				continue
			}
			return nil, fmt.Errorf("update task %s: %w", id, err)
		}
		return &Version{Record: rec, Rev: newRev}, nil
	}
	return nil, fmt.Errorf("update task %s: gave up after %d conflicting writes: %w", id, maxUpdateTries, lastErr)
}
