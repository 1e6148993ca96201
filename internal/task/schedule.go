package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the recurring schedules' NATS resources.
//
// A schedule is one message on "schedules.def.<id>" in the stream
// SCHEDULES: its body is the Schedule record, its Nats-Schedule header the
// spec (cron or @every) and its Nats-Schedule-Target "schedules.fire.<id>".
// The server's own message scheduler (nats-server >= 2.12) stores a copy
// of it on the target at every tick, with Nats-Scheduler naming the
// schedule's subject and Nats-Schedule-Next the next tick's time. The
// gateways share the durable consumer ScheduleConsumer on the ticks and
// turn each into a task (gateway/schedules_run.go).
const (
	// ScheduleStream holds the schedules and their ticks.
	ScheduleStream = "SCHEDULES"
	// ScheduleDefPrefix and ScheduleFirePrefix prefix a schedule's id to
	// make the subject of the schedule and of its ticks.
	ScheduleDefPrefix  = "schedules.def."
	ScheduleFirePrefix = "schedules.fire."
	// ScheduleConsumer is the durable pull consumer on every tick
	// (schedules.fire.>) that all gateways share, so that each tick is
	// delivered to one of them.
	ScheduleConsumer = "schedulers"
	// ScheduleTickTTL is how long a tick waits for a gateway to take it
	// (its Nats-TTL, set through Nats-Schedule-TTL). A later tick of the
	// same schedule replaces it sooner: the stream keeps one message per
	// subject.
	ScheduleTickTTL = 24 * time.Hour
	// ScheduleTombstoneTTL is how long the marker that deleted a schedule
	// (a Nats-Rollup on its subject) stays before it expires.
	ScheduleTombstoneTTL = time.Minute
)

// ScheduleDefSubject is the subject of schedule id.
func ScheduleDefSubject(id string) string { return ScheduleDefPrefix + id }

// ScheduleFireSubject is the subject of the ticks of schedule id.
func ScheduleFireSubject(id string) string { return ScheduleFirePrefix + id }

// Schedule is a recurring task: the body of its message on
// ScheduleDefSubject, and what the schedule routes answer.
type Schedule struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// Spec is the Nats-Schedule value: a 6-field cron expression (with
	// seconds), a predefined one (@hourly, @daily…) or "@every <duration>".
	Spec string `json:"spec"`
	// TimeZone is the IANA zone a cron spec is read in (UTC when empty).
	TimeZone string `json:"time_zone,omitempty"`
	// Task is the /longtask body each tick submits.
	Task json.RawMessage `json:"task"`
	// Queue, when set, is the queue of every task the schedule makes.
	Queue     string    `json:"queue,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// scheduleStreamConfig is the stream of schedules and ticks. One message
// per subject: a schedule is its one message (the server also rolls up a
// schedule's subject when it stores one), a tick replaces the schedule's
// previous tick. So the stream holds at most two messages per schedule,
// and ticks that no gateway took in time collapse into the latest one. No
// MaxAge nor byte limit, which would drop schedules: ticks expire by their
// own TTL (ScheduleTickTTL), and a schedule lives until it is deleted.
// Schedules need DiscardOld and roll-ups.
func scheduleStreamConfig(cfg ProvisionConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              ScheduleStream,
		Description:       "scalelab recurring task schedules (schedules.def.<id>) and their ticks (schedules.fire.<id>)",
		Subjects:          []string{ScheduleDefPrefix + "*", ScheduleFirePrefix + "*"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		MaxMsgsPerSubject: 1,
		MaxMsgSize:        MaxPayloadBytes + 8<<10,
		Discard:           jetstream.DiscardOld,
		Duplicates:        cfg.DedupeWindow,
		AllowMsgSchedules: true,
		AllowMsgTTL:       true,
		AllowRollup:       true,
	}
}

// scheduleConsumerConfig is the consumer the gateways share on the ticks.
// A tick that a gateway fails to turn into a task is redelivered after
// AckWait (or sooner, on its nak) to any gateway; each try makes the same
// task (its id derives from the tick), so a redelivery is never a second
// task.
func scheduleConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ScheduleConsumer,
		Description:   "scalelab gateways: schedule ticks to turn into tasks",
		FilterSubject: ScheduleFirePrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// provisionSchedules creates the tick consumer, or updates it when it
// differs (the stream is one of streamConfigs).
func provisionSchedules(ctx context.Context, js jetstream.JetStream) error {
	want := scheduleConsumerConfig()
	c, err := js.Consumer(ctx, ScheduleStream, want.Durable)
	if err == nil {
		cur := c.CachedInfo().Config
		if cur.FilterSubject == want.FilterSubject && cur.AckWait == want.AckWait && cur.MaxAckPending == want.MaxAckPending {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("provision consumer %s: %w", want.Durable, err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, ScheduleStream, want); err != nil {
		return fmt.Errorf("provision consumer %s: %w", want.Durable, err)
	}
	return nil
}

// MinEvery is the shortest @every interval the server fires.
const MinEvery = time.Second

// maxSpecLen bounds a spec: it travels in a header.
const maxSpecLen = 200

// Spec is a parsed schedule spec: when a schedule fires.
type Spec struct {
	every time.Duration // @every; 0 for cron
	cron  cronSpec
	loc   *time.Location
}

// ParseSpec reads spec as the server will (nats-server's
// parseMsgSchedule), so that a spec it would refuse, or accept and then
// silently drop, is refused here first: "@every <duration>" (at least
// MinEvery, no time zone), a predefined cron (@yearly, @annually,
// @monthly, @weekly, @daily, @midnight, @hourly) or a 6-field cron
// expression (second minute hour day-of-month month day-of-week; numbers,
// names of months and weekdays, *, ?, ranges, lists and steps), in zone
// (an IANA name; UTC when empty). "@at" one-shots are not schedules (a
// /longtask with "run_at" is). Its errors wrap ErrInvalid.
func ParseSpec(spec, zone string) (*Spec, error) {
	if len(spec) > maxSpecLen {
		return nil, fmt.Errorf("%w: schedule is over %d characters", ErrInvalid, maxSpecLen)
	}
	// Both travel as header values: a control character (a newline)
	// would end the header.
	if !printable(spec) {
		return nil, fmt.Errorf("%w: schedule has a control character", ErrInvalid)
	}
	var loc *time.Location
	if zone != "" {
		l, err := time.LoadLocation(zone)
		if err != nil || !printable(zone) || strings.Contains(zone, " ") {
			return nil, fmt.Errorf("%w: unknown time zone %q (an IANA name such as Europe/Paris)", ErrInvalid, Truncate(zone, 40))
		}
		loc = l
	}
	if rest, ok := strings.CutPrefix(spec, "@every "); ok {
		if loc != nil {
			return nil, fmt.Errorf("%w: a time zone applies to a cron schedule only, not to @every", ErrInvalid)
		}
		d, err := time.ParseDuration(rest)
		if err != nil || d < MinEvery {
			return nil, fmt.Errorf("%w: every must be a duration of at least %v, such as 30s or 5m", ErrInvalid, MinEvery)
		}
		return &Spec{every: d}, nil
	}
	if strings.HasPrefix(spec, "@at ") {
		return nil, fmt.Errorf(`%w: a one-shot "@at" is not a schedule: POST /longtask with "run_at"`, ErrInvalid)
	}
	expr := spec
	switch spec {
	case "@yearly", "@annually":
		expr = "0 0 0 1 1 *"
	case "@monthly":
		expr = "0 0 0 1 * *"
	case "@weekly":
		expr = "0 0 0 * * 0"
	case "@daily", "@midnight":
		expr = "0 0 0 * * *"
	case "@hourly":
		expr = "0 0 * * * *"
	}
	c, err := parseCronSpec(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: cron %q: %v (6 fields: second minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly, @yearly)", ErrInvalid, Truncate(spec, 60), err)
	}
	if loc == nil {
		loc = time.UTC
	}
	s := &Spec{cron: c, loc: loc}
	if s.Next(time.Now()).IsZero() {
		return nil, fmt.Errorf("%w: cron %q never fires in the next 5 years", ErrInvalid, Truncate(spec, 60))
	}
	return s, nil
}

// printable reports whether s has no ASCII control character.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// Every is the interval of an @every spec, 0 for a cron spec.
func (s *Spec) Every() time.Duration { return s.every }

// Next is the first time after t that a cron spec fires; the zero time if
// none in the next five years. For an @every spec, see NextEvery.
func (s *Spec) Next(t time.Time) time.Time {
	if s.every > 0 {
		return time.Time{}
	}
	return s.cron.next(t, s.loc)
}

// NextEvery is when an @every spec, stored at start, fires next after now,
// as the server schedules it: first at start (rounded to the second) plus
// the interval, then each interval after the one before. After a server
// restart the server may shift that phase (it skips missed ticks and
// fires once), so this is an estimate; a tick's Nats-Schedule-Next is
// exact.
func (s *Spec) NextEvery(start, now time.Time) time.Time {
	if s.every <= 0 {
		return time.Time{}
	}
	next := start.UTC().Round(time.Second).Add(s.every)
	if next.After(now) {
		return next
	}
	k := now.Sub(next)/s.every + 1
	return next.Add(k * s.every)
}

// NextAfter is when s fires next after now, for a schedule stored at
// start: Next for cron, NextEvery for @every.
func (s *Spec) NextAfter(start, now time.Time) time.Time {
	if s.every > 0 {
		return s.NextEvery(start, now)
	}
	return s.Next(now)
}
