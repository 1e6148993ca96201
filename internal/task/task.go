package task

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/strictjson"
)

// Names of the NATS resources (DESIGN.md).
const (
	// Stream is the work-queue stream that holds submitted tasks.
	Stream = "TASKS"
	// SubjectPrefix prefixes a task's queue and type to make its subject:
	// tasks.default.report (Subject).
	SubjectPrefix = "tasks."
	// Consumer is the durable pull consumer that all workers shared before
	// tasks had queues (filter "tasks.>"). The provisioner deletes it: on
	// a work-queue stream it would overlap the per-queue consumers
	// (QueueConsumer).
	Consumer = "workers"
	// QueueConsumerPrefix prefixes a queue's name to make the durable pull
	// consumer that the workers serving that queue share.
	QueueConsumerPrefix = "workers-"
	// DefaultQueue is the queue of a task whose submission and type name
	// none. A message on a subject of the layout before queues
	// (tasks.<type>) belongs to it.
	DefaultQueue = "default"
	// Bucket is the KV bucket of task records, keyed by task id.
	Bucket = "tasks"
	// DelayedStream holds delayed tasks as schedule messages (nats-server
	// >= 2.12) on "delayed.tasks.at.<id>". When one fires, the server
	// stores the task on "delayed.tasks.due.<type>", and TASKS, which
	// sources those subjects transformed back to "tasks.<type>", queues it.
	// A separate stream because schedules cannot use DiscardNew, which the
	// work queue needs for back-pressure.
	DelayedStream = "TASKS_DELAYED"
	// DelayedAtPrefix and DelayedDuePrefix are the subject prefixes of a
	// delayed task's schedule (by id) and of the task once due (by type).
	DelayedAtPrefix  = "delayed.tasks.at."
	DelayedDuePrefix = "delayed.tasks.due."
	// DLQStream holds tasks that used up their attempts, on
	// "dlq.tasks.<type>", with the last error in a header.
	DLQStream = "TASKS_DLQ"
	// DLQSubjectPrefix prefixes a task's type to make its dead-letter subject.
	DLQSubjectPrefix = "dlq.tasks."
	// CancelSubjectPrefix prefixes a task id to make the core NATS subject
	// on which the gateway tells workers to stop a running task. It is
	// outside "tasks.>" so it is never stored in the TASKS stream.
	CancelSubjectPrefix = "taskctl.cancel."
)

// Header names set on task messages.
const (
	// HeaderTaskID carries the task id so it can be logged without decoding.
	HeaderTaskID = "Scalelab-Task-Id"
	// HeaderAttempts and HeaderError carry, on a dead letter, how many
	// times the task ran and its last error.
	HeaderAttempts = "Scalelab-Attempts"
	HeaderError    = "Scalelab-Error"
)

// DLQSubject returns the dead-letter subject of a task of type typ.
func DLQSubject(typ string) string { return DLQSubjectPrefix + typ }

// CancelSubject returns the subject that cancels the running task id.
func CancelSubject(id string) string { return CancelSubjectPrefix + id }

// Subject returns the subject a task of type typ is published to on queue:
// tasks.<queue>.<type>.
func Subject(queue, typ string) string { return SubjectPrefix + queue + "." + typ }

// QueueSubjects are the subjects of queue's tasks, the filter of its
// consumer: tasks.<queue>.>, and for the default queue also tasks.*, the
// layout before queues, so that a task queued by an older build runs.
func QueueSubjects(queue string) []string {
	if queue == DefaultQueue {
		return []string{SubjectPrefix + queue + ".>", SubjectPrefix + "*"}
	}
	return []string{SubjectPrefix + queue + ".>"}
}

// QueueConsumer returns the name of the durable consumer of queue.
func QueueConsumer(queue string) string { return QueueConsumerPrefix + queue }

// SplitSubject returns the queue and type of a task subject, either
// tasks.<queue>.<type> or the older tasks.<type> (DefaultQueue). ok is
// false for anything else.
func SplitSubject(subject string) (queue, typ string, ok bool) {
	rest, found := strings.CutPrefix(subject, SubjectPrefix)
	if !found {
		return "", "", false
	}
	queue, typ, two := strings.Cut(rest, ".")
	if !two {
		queue, typ = DefaultQueue, rest
	}
	if !ValidName(queue) || !ValidName(typ) {
		return "", "", false
	}
	return queue, typ, true
}

// MaxNameLen bounds the name of a task type or queue.
const MaxNameLen = 64

// ValidName reports whether s can name a task type or a queue: 1 to
// MaxNameLen letters, digits, '_' and '-'. A name is one token of a NATS
// subject and a KV key, so it can never carry a dot, a wildcard or a space.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// State is where a task is in its life.
type State string

// The states of DESIGN.md.
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Dead      State = "dead"
	Cancelled State = "cancelled"
)

// Terminal reports whether s is final: a task in a terminal state never runs again.
func (s State) Terminal() bool {
	switch s {
	case Succeeded, Failed, Dead, Cancelled:
		return true
	}
	return false
}

// Record is a task's status as stored in the bucket and returned by
// GET /tasks/{id}.
type Record struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue,omitempty"`
	State State  `json:"state"`
	// Attempts is how many runs of the task have started. MaxAttempts
	// and TimeoutMS, when set, are its type's limits as registered when
	// it was submitted (TypeDef); a worker uses them over its own
	// defaults, so every worker, in any language, applies the same.
	Attempts    int `json:"attempts"`
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Generation counts the times the task was queued again after it
	// ended (Retry). Its messages carry the generation they queue
	// (Envelope.Generation): a worker drops a message of an older one, a
	// leftover of the task's earlier life (a cancelled task's message not
	// yet pulled), so the retried task runs once.
	Generation      int             `json:"generation,omitempty"`
	TimeoutMS       int64           `json:"timeout_ms,omitempty"`
	Progress        int             `json:"progress"`
	ProgressMessage string          `json:"progress_message,omitempty"`
	Payload         json.RawMessage `json:"payload,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           string          `json:"error,omitempty"`
	// Failures are the task's failed attempts, oldest first: the last
	// MaxFailures of them, across retries (each with its generation).
	// Error is the last one's (or why it waits: a hand-back).
	Failures  []Failure `json:"failures,omitempty"`
	Worker    string    `json:"worker,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	// Owner is the sub of the token that submitted the task; empty on
	// records written before tasks had owners.
	Owner      string     `json:"owner,omitempty"`
	RunAt      *time.Time `json:"run_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// Failure is one failed attempt of a task, as its record keeps it.
type Failure struct {
	Attempt    int       `json:"attempt"`
	Generation int       `json:"generation,omitempty"`
	Error      string    `json:"error"`
	At         time.Time `json:"at"`
}

// Bounds of a record's Failures: a task that fails often does not grow
// its record without end.
const (
	MaxFailures     = 10
	MaxFailureBytes = 1000
)

// AddFailure records a failed attempt: its error (cut to MaxFailureBytes)
// and when, dropping the oldest past MaxFailures.
func (r *Record) AddFailure(attempt int, err string, at time.Time) {
	f := Failure{Attempt: attempt, Generation: r.Generation, Error: Truncate(err, MaxFailureBytes), At: at}
	r.Failures = append(r.Failures, f)
	if n := len(r.Failures) - MaxFailures; n > 0 {
		r.Failures = append(r.Failures[:0:0], r.Failures[n:]...)
	}
}

// Envelope is the body of a task message.
type Envelope struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Queue   string          `json:"queue,omitempty"`
	Payload json.RawMessage `json:"payload"`
	// Generation is the record's Generation when this message queued it.
	Generation int `json:"generation,omitempty"`
	// Record and Revision, when set, are the task's record as the gateway
	// created it and its revision in the bucket: a worker that finds the
	// record unchanged (a first delivery, nearly always) marks it running
	// without reading it first; when it has changed (a cancel; a dead
	// letter retried), the compare-and-set fails and the worker reads it.
	// The gateway leaves them out when the payload is large
	// (MaxInlinePayload), which they would carry twice.
	Record   *Record `json:"record,omitempty"`
	Revision uint64  `json:"revision,omitempty"`
}

// QueueOrDefault is the envelope's queue, DefaultQueue when it names none
// (a message queued before tasks had queues).
func (e Envelope) QueueOrDefault() string {
	if e.Queue == "" {
		return DefaultQueue
	}
	return e.Queue
}

// MaxInlinePayload is the largest payload whose record a task message
// carries (Envelope.Record).
const MaxInlinePayload = 4 << 10

// Created returns the version of the record the envelope carries, or nil.
func (e Envelope) Created() *Version {
	if e.Record == nil || e.Revision == 0 || e.Record.ID != e.ID {
		return nil
	}
	return &Version{Record: e.Record, Rev: e.Revision}
}

// ErrInvalid is wrapped by every validation error in this package.
var ErrInvalid = errors.New("task: invalid")

// IDBytes is how many random bytes a task id carries.
const IDBytes = 16

// NewID returns a new task id: IDBytes from crypto/rand, hex encoded (32
// characters). Unlike a nuid, whose ids share a fixed prefix and count up,
// it says nothing about the ids before or after it, so nobody can reach
// another user's task by computing its id from their own.
func NewID() string {
	var b [IDBytes]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	return hex.EncodeToString(b[:])
}

// ValidID reports whether id is a well-formed task id: 1 to 64 letters
// and digits, so an id can never smuggle a wildcard, a dot or a path into
// a KV key or subject. (A loop, not a regexp: every task message is
// checked, and the regexp cost about 1 % of a task's CPU.)
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := range len(id) {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// MaxPayloadBytes bounds a task's JSON body.
const MaxPayloadBytes = 64 << 10

// MaxSleep bounds the sleep task's duration_ms.
const MaxSleep = 10 * time.Minute

// SleepPayload is the body of a sleep task: {"task":"sleep","duration_ms":N}.
type SleepPayload struct {
	DurationMS int64 `json:"duration_ms"`
}

// head is what every /longtask body may declare. The other members are
// the task's payload, free: an open schema (strictjson keeps them in the
// inline map, and still refuses duplicates and a member that differs from
// a declared one only in case, such as "Task").
type head struct {
	Task  *string                    `json:"task"`
	Queue *string                    `json:"queue"`
	RunAt *string                    `json:"run_at"`
	Delay *string                    `json:"delay"`
	Rest  map[string]json.RawMessage `json:",inline"`
}

// sleepBody is a sleep task's body as DecodeSleep reads it: SleepPayload
// and the other members, free.
type sleepBody struct {
	SleepPayload
	Rest map[string]json.RawMessage `json:",inline"`
}

// Submission is a /longtask body that Parse accepted.
type Submission struct {
	// Type is the task's type, as the body names it: Catalog.Resolve
	// checks that it is registered.
	Type string
	// Queue is the body's "queue", or "" when it names none (the type's
	// default queue then, else DefaultQueue).
	Queue string
	// Payload is the body in canonical form (strictjson.Canonical): what
	// the record and the task message carry, and so exactly what the
	// worker reads. Two bodies that read the same (whitespace, member
	// order, string escapes aside) have the same Payload, which is what
	// an Idempotency-Key repeat is compared by.
	Payload json.RawMessage
	// runAt and delay are the body's "run_at" and "delay", for RunAt.
	runAt, delay *string
}

// Parse reads a /longtask body with the one strict reader (strictjson: one
// JSON object, no duplicate keys, keys matched exactly) and checks its
// reserved members: "task" names a type (a string, not empty), "queue" is
// a queue's name; the other members are the type's payload. It is
// syntactic: whether the type and queue are registered, and the payload
// valid against the type's schema, is Catalog.Resolve's to say. Its errors
// wrap ErrInvalid and say what is wrong in JSON's terms.
func Parse(body []byte) (*Submission, error) {
	if len(body) > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: body is over %d bytes", ErrInvalid, MaxPayloadBytes)
	}
	h, err := strictjson.DecodeBody[head](bytes.NewReader(body))
	if err != nil {
		return nil, invalidJSON("", err)
	}
	if h.Task == nil || *h.Task == "" {
		return nil, fmt.Errorf(`%w: "task" is required: the name of a task type (GET /task-types lists them)`, ErrInvalid)
	}
	typ := *h.Task
	var queue string
	if h.Queue != nil {
		if queue = *h.Queue; !ValidName(queue) {
			return nil, fmt.Errorf(`%w: "queue" must be 1-%d letters, digits, '_' or '-'`, ErrInvalid, MaxNameLen)
		}
	}
	payload, err := strictjson.Canonical(body)
	if err != nil {
		// Unreachable: the strict reader accepted body.
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &Submission{Type: typ, Queue: queue, Payload: payload, runAt: h.RunAt, delay: h.Delay}, nil
}

// Validate checks a /longtask body as Parse does and returns its task type.
func Validate(body []byte) (string, error) {
	s, err := Parse(body)
	if err != nil {
		return "", err
	}
	return s.Type, nil
}

// MaxDelay bounds how far ahead a task may be scheduled.
const MaxDelay = 7 * 24 * time.Hour

// RunAt returns when the task asks to run: "run_at" (RFC 3339) or
// "delay" (a Go duration such as "90s"), at most MaxDelay ahead of now.
// It returns the zero time for "now": no field, or a time not after now.
func (s *Submission) RunAt(now time.Time) (time.Time, error) {
	var at time.Time
	switch {
	case s.runAt != nil && s.delay != nil:
		return time.Time{}, fmt.Errorf(`%w: give "run_at" or "delay", not both`, ErrInvalid)
	case s.runAt != nil:
		t, err := time.Parse(time.RFC3339, *s.runAt)
		if err != nil {
			return time.Time{}, fmt.Errorf(`%w: "run_at" must be an RFC 3339 time such as 2030-01-02T15:04:05Z`, ErrInvalid)
		}
		at = t
	case s.delay != nil:
		d, err := time.ParseDuration(*s.delay)
		if err != nil || d < 0 {
			return time.Time{}, fmt.Errorf(`%w: "delay" must be a duration such as "90s" or "5m"`, ErrInvalid)
		}
		at = now.Add(d)
	default:
		return time.Time{}, nil
	}
	if at.Sub(now) > MaxDelay {
		return time.Time{}, fmt.Errorf("%w: a task can be scheduled at most %v ahead", ErrInvalid, MaxDelay)
	}
	if !at.After(now) {
		return time.Time{}, nil
	}
	return at.UTC(), nil
}

// DecodeSleep decodes and bounds a sleep payload, with the strict reader
// the gateway read it with (Parse). The gateway checks the same bounds
// against the sleep type's schema (BuiltinTypes); the worker checks them
// again here, since a task may reach it without a gateway.
func DecodeSleep(body []byte) (time.Duration, error) {
	p, err := strictjson.DecodeBody[sleepBody](bytes.NewReader(body))
	if err != nil {
		return 0, invalidJSON("sleep: ", err)
	}
	// Bound the number before converting it: a huge duration_ms would
	// overflow time.Duration and wrap around to a small or negative sleep.
	if p.DurationMS < 0 || p.DurationMS > MaxSleep.Milliseconds() {
		return 0, fmt.Errorf("%w: sleep: duration_ms must be between 0 and %d", ErrInvalid, MaxSleep.Milliseconds())
	}
	return time.Duration(p.DurationMS) * time.Millisecond, nil
}

// invalidJSON wraps ErrInvalid around the strict reader's refusal, err,
// keeping its message for clients (it names the field and says why, in
// JSON's terms) after prefix.
func invalidJSON(prefix string, err error) error {
	_, msg := apperr.Public(err)
	return fmt.Errorf("%w: %s%s", ErrInvalid, prefix, msg)
}

// Truncate cuts s to at most n bytes, without splitting a character, and
// marks the cut with "…": for text from clients or handlers kept in a
// record, an index or an error message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
