package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// scheduleOut is a schedule as the routes answer it.
type scheduleOut struct {
	task.Schedule
	NextRun *time.Time `json:"next_run"`
	LastRun *time.Time `json:"last_run"`
}

func postSchedule(t *testing.T, base, tok, body string) scheduleOut {
	t.Helper()
	r := send(t, http.MethodPost, base+"/schedules", tok, body, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /schedules %s = %d %s, want 201", body, r.status, r.body)
	}
	var s scheduleOut
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatal(err)
	}
	if loc := r.header.Get("Location"); loc != "/schedules/"+s.ID {
		t.Errorf("Location = %q, want /schedules/%s", loc, s.ID)
	}
	return s
}

// tickTasks reads every task record in the bucket, and those that the
// ticks of schedule id made, by their tick's stream sequence (from the
// record's request id, schedule.<id>.<seq>).
func tickTasks(t *testing.T, nc *nats.Conn, id string) (all int, bySeq map[uint64][]*task.Record) {
	t.Helper()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	bySeq = map[uint64][]*task.Record{}
	for k := range keys.Keys() {
		all++
		e, err := kv.Get(t.Context(), k)
		if err != nil {
			t.Fatal(err)
		}
		var rec task.Record
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		if rest, ok := strings.CutPrefix(rec.RequestID, "schedule."+id+"."); ok {
			seq, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				t.Fatalf("request id %q", rec.RequestID)
			}
			bySeq[seq] = append(bySeq[seq], &rec)
		}
	}
	return all, bySeq
}

// TestScheduleTicksBecomeOneTaskEach: an @every 1s schedule, with two
// gateways taking ticks from the shared consumer, makes exactly one task
// per tick (no tick lost, none twice), owned by the schedule's owner; a
// DELETE stops the ticks.
func TestScheduleTicksBecomeOneTaskEach(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	baseA := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.ID = "gw-a" })
	baseB := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.ID = "gw-b" })
	tok := tokenFor(t, "alice", auth.ScopeTasksWrite, auth.ScopeTasksRead)

	s := postSchedule(t, baseA, tok, `{"every":"1s","task":{"task":"noop","n":1}}`)
	if s.Owner != "alice" || s.Spec != "@every 1s" || s.NextRun == nil || s.LastRun != nil {
		t.Fatalf("schedule = %+v, want owner alice, spec @every 1s, a next run, no last run yet", s)
	}
	// Three ticks at least: about 3 s.
	testutil.Eventually(t, 15*time.Second, func() error {
		if _, by := tickTasks(t, nc, s.ID); len(by) < 3 {
			return fmt.Errorf("%d tick tasks so far", len(by))
		}
		return nil
	})
	var got scheduleOut
	if r := send(t, http.MethodGet, baseB+"/schedules/"+s.ID, tok, "", nil); r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil ||
		got.LastRun == nil || time.Since(*got.LastRun) > 10*time.Second {
		t.Errorf("GET /schedules/%s = %d %s, want its last_run within the last seconds", s.ID, r.status, r.body)
	}
	if r := send(t, http.MethodDelete, baseB+"/schedules/"+s.ID, tok, "", nil); r.status != http.StatusOK {
		t.Fatalf("DELETE /schedules/%s = %d %s", s.ID, r.status, r.body)
	}
	js, _ := jetstream.New(nc)
	cons, err := js.Consumer(t.Context(), task.ScheduleStream, task.ScheduleConsumer)
	if err != nil {
		t.Fatal(err)
	}
	// Every tick taken and settled.
	settled := func() {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			info, err := cons.Info(t.Context())
			if err != nil {
				return err
			}
			if info.NumPending != 0 || info.NumAckPending != 0 {
				return fmt.Errorf("ticks pending %d, unacked %d", info.NumPending, info.NumAckPending)
			}
			return nil
		})
	}
	settled()
	// Another schedule's two ticks take over a second: time for a tick
	// of the deleted one, had it any.
	other := postSchedule(t, baseB, tok, `{"every":"1s","task":{"task":"noop"}}`)
	testutil.Eventually(t, 15*time.Second, func() error {
		if _, by := tickTasks(t, nc, other.ID); len(by) < 2 {
			return fmt.Errorf("%d tick tasks of the other schedule so far", len(by))
		}
		return nil
	})
	// Stop the other schedule too and let its last tick settle, so that
	// the counts below are of one still picture (the other schedule went
	// on ticking while they were read, once, and the counts disagreed).
	if r := send(t, http.MethodDelete, baseB+"/schedules/"+other.ID, tok, "", nil); r.status != http.StatusOK {
		t.Fatalf("DELETE /schedules/%s = %d %s", other.ID, r.status, r.body)
	}
	settled()

	all, bySeq := tickTasks(t, nc, s.ID)
	_, otherSeqs := tickTasks(t, nc, other.ID)
	var seqs []uint64
	for seq, recs := range bySeq {
		seqs = append(seqs, seq)
		if len(recs) != 1 {
			t.Errorf("tick %d made %d tasks, want 1", seq, len(recs))
		}
		for _, r := range recs {
			if r.Owner != "alice" || r.Type != "noop" || string(r.Payload) != `{"n":1,"task":"noop"}` {
				t.Errorf("task of tick %d = %+v, want alice's noop with the schedule's payload", seq, r)
			}
		}
	}
	slices.Sort(seqs)
	t.Logf("ticks %v made one task each; %d task records in all", seqs, all)
	// The schedule is the stream's first message: its ticks are 2, 3, …
	// until the delete, none lost.
	for i, seq := range seqs {
		if seq != uint64(i+2) {
			t.Fatalf("tick sequences %v, want 2, 3, … without a gap", seqs)
		}
	}
	if all < len(bySeq)+len(otherSeqs) {
		t.Errorf("%d task records, want at least %d", all, len(bySeq)+len(otherSeqs))
	}
	// Nothing after the delete: the deleted schedule's last tick is
	// before the other schedule's message.
	if min := slices.Min(slices.Collect(func(yield func(uint64) bool) {
		for k := range otherSeqs {
			if !yield(k) {
				return
			}
		}
	})); seqs[len(seqs)-1] >= min {
		t.Errorf("deleted schedule ticked at %d, after the other schedule's tick %d", seqs[len(seqs)-1], min)
	}
	// One message per task on TASKS: no tick published twice.
	st, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != uint64(all) {
		t.Errorf("TASKS holds %d messages for %d tasks, want one each", got, all)
	}
}

// TestScheduleRoutes: what POST /schedules refuses (400, JSON), and who
// sees and deletes what.
func TestScheduleRoutes(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	alice := tokenFor(t, "alice", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	bob := tokenFor(t, "bob", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	admin := tokenFor(t, "root", auth.ScopeTasksRead, auth.ScopeTasksWrite, auth.ScopeTasksAdmin)
	reader := tokenFor(t, "carol", auth.ScopeTasksRead)

	for _, tc := range []struct{ name, body string }{
		{"neither", `{"task":{"task":"noop"}}`},
		{"both", `{"cron":"0 * * * * *","every":"1m","task":{"task":"noop"}}`},
		{"bad cron", `{"cron":"0 * * *","task":{"task":"noop"}}`},
		{"cron out of range", `{"cron":"61 * * * * *","task":{"task":"noop"}}`},
		{"cron never", `{"cron":"0 0 0 31 2 *","task":{"task":"noop"}}`},
		{"cron @every", `{"cron":"@every 1m","task":{"task":"noop"}}`},
		{"every too short", `{"every":"500ms","task":{"task":"noop"}}`},
		{"every not a duration", `{"every":"often","task":{"task":"noop"}}`},
		{"zone with every", `{"every":"1m","time_zone":"Europe/Paris","task":{"task":"noop"}}`},
		{"bad zone", `{"cron":"@hourly","time_zone":"Mars/Olympus","task":{"task":"noop"}}`},
		{"no task", `{"every":"1m"}`},
		{"null task", `{"every":"1m","task":null}`},
		{"unknown type", `{"every":"1m","task":{"task":"nope"}}`},
		{"bad payload", `{"every":"1m","task":{"task":"sleep","duration_ms":-1}}`},
		{"task with delay", `{"every":"1m","task":{"task":"noop","delay":"5s"}}`},
		{"bad queue", `{"every":"1m","queue":"a.b","task":{"task":"noop"}}`},
		{"unknown queue", `{"every":"1m","queue":"nosuchqueue","task":{"task":"noop"}}`},
		{"payload against the schema", `{"every":"1m","task":{"task":"sleep","duration_ms":"soon"}}`},
		{"queues differ", `{"every":"1m","queue":"low","task":{"task":"noop","queue":"critical"}}`},
		{"unknown member", `{"every":"1m","task":{"task":"noop"},"extra":1}`},
		{"not JSON", `every minute`},
	} {
		r := send(t, http.MethodPost, base+"/schedules", alice, tc.body, nil)
		if r.status != http.StatusBadRequest || errorCode(t, r) != "invalid" {
			t.Errorf("%s: POST /schedules %s = %d %s, want 400 invalid", tc.name, tc.body, r.status, r.body)
		}
	}
	if r := send(t, http.MethodPost, base+"/schedules", reader, `{"every":"1m","task":{"task":"noop"}}`, nil); r.status != http.StatusForbidden {
		t.Errorf("POST /schedules with tasks:read only = %d, want 403", r.status)
	}

	a := postSchedule(t, base, alice, `{"cron":"0 30 9 * * mon-fri","time_zone":"Europe/Paris","queue":"low","task":{"task":"report"}}`)
	if a.TimeZone != "Europe/Paris" || a.Queue != "low" || a.NextRun == nil {
		t.Fatalf("schedule = %+v", a)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	if n := a.NextRun.In(paris); n.Hour() != 9 || n.Minute() != 30 || n.Weekday() == time.Saturday || n.Weekday() == time.Sunday {
		t.Errorf("next run = %v (%v in Paris), want a weekday at 09:30 Paris time", a.NextRun, n)
	}
	b := postSchedule(t, base, bob, `{"every":"1h","task":{"task":"noop"}}`)
	if want := time.Now().Add(time.Hour); b.NextRun == nil || b.NextRun.Sub(want).Abs() > 5*time.Second {
		t.Errorf("next run of @every 1h = %v, want about %v", b.NextRun, want)
	}

	list := func(tok string) []string {
		r := get(t, base+"/schedules", tok)
		if r.status != http.StatusOK {
			t.Fatalf("GET /schedules = %d %s", r.status, r.body)
		}
		var out struct{ Schedules []scheduleOut }
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range out.Schedules {
			ids = append(ids, s.ID)
		}
		return ids
	}
	if got := list(alice); !slices.Equal(got, []string{a.ID}) {
		t.Errorf("alice's list = %v, want [%s]", got, a.ID)
	}
	if got := list(admin); !slices.Equal(got, []string{a.ID, b.ID}) {
		t.Errorf("admin's list = %v, want [%s %s]", got, a.ID, b.ID)
	}
	if got := list(reader); len(got) != 0 {
		t.Errorf("carol's list = %v, want none", got)
	}
	if r := get(t, base+"/schedules/"+a.ID, alice); r.status != http.StatusOK || !strings.Contains(string(r.body), `"next_run"`) {
		t.Errorf("GET own schedule = %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		method, id, tok string
		want            int
	}{
		{http.MethodGet, a.ID, bob, http.StatusNotFound},
		{http.MethodDelete, a.ID, bob, http.StatusNotFound},
		{http.MethodGet, task.NewID(), alice, http.StatusNotFound},
		{http.MethodDelete, task.NewID(), alice, http.StatusNotFound},
		{http.MethodGet, "not-an-id", alice, http.StatusBadRequest},
		{http.MethodDelete, a.ID, reader, http.StatusForbidden},
		{http.MethodDelete, b.ID, admin, http.StatusOK},
		{http.MethodDelete, b.ID, admin, http.StatusNotFound},
		{http.MethodGet, b.ID, bob, http.StatusNotFound},
		{http.MethodDelete, a.ID, alice, http.StatusOK},
	} {
		r := send(t, tc.method, base+"/schedules/"+tc.id, tc.tok, "", nil)
		if r.status != tc.want {
			t.Errorf("%s /schedules/%s = %d %s, want %d", tc.method, tc.id, r.status, r.body, tc.want)
		}
	}
	if got := list(admin); len(got) != 0 {
		t.Errorf("admin's list after the deletes = %v, want none", got)
	}
}

// startStoppableGateway is startGateway (the streams provisioned already),
// returning the running gateway so that the test can stop it.
func startStoppableGateway(t *testing.T, nc *nats.Conn, id string) (string, *testutil.Running) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.Listener, cfg.JWT = id, ln, testKeys
	cfg.RequestTimeout, cfg.ShutdownTimeout = 2*time.Second, 2*time.Second
	run := testutil.Start(t, func(ctx context.Context) error { return Run(ctx, cfg, nc, testutil.QuietLog()) })
	base := "http://" + ln.Addr().String()
	testutil.Eventually(t, 10*time.Second, func() error { return ready(t, base) })
	return base, run
}

// TestScheduleTicksCollapseWithoutGateways: while NATS runs and no
// gateway does, a schedule's ticks do not pile up: the stream keeps one
// message per subject, so each tick replaces the one before, and a
// gateway that comes back makes one task for the whole gap.
func TestScheduleTicksCollapseWithoutGateways(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	js, _ := jetstream.New(nc)
	if _, err := task.Provision(t.Context(), js, DefaultConfig().Provision); err != nil {
		t.Fatal(err)
	}
	base, gw := startStoppableGateway(t, testutil.Connect(t, ns), "gw-1")
	tok := tokenFor(t, "alice", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	s := postSchedule(t, base, tok, `{"every":"1s","task":{"task":"noop"}}`)
	testutil.Eventually(t, 15*time.Second, func() error {
		if _, by := tickTasks(t, nc, s.ID); len(by) < 1 {
			return fmt.Errorf("no tick task yet")
		}
		return nil
	})
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(t.Context(), task.ScheduleStream)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		info, err := stream.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	stoppedAt := lastSeq()
	// Three more ticks with no gateway: still one waiting.
	var gapEnd uint64
	testutil.Eventually(t, 15*time.Second, func() error {
		if gapEnd = lastSeq(); gapEnd < stoppedAt+3 {
			return fmt.Errorf("last sequence %d, want %d", gapEnd, stoppedAt+3)
		}
		return nil
	})
	cons, err := stream.Consumer(t.Context(), task.ScheduleConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 {
		t.Errorf("ticks waiting after %d ticks without a gateway = %d, want 1", gapEnd-stoppedAt, info.NumPending)
	}

	startStoppableGateway(t, testutil.Connect(t, ns), "gw-2")
	testutil.Eventually(t, 15*time.Second, func() error {
		_, by := tickTasks(t, nc, s.ID)
		for seq := range by {
			if seq > gapEnd {
				return nil
			}
		}
		return fmt.Errorf("no tick after the gap made a task yet")
	})
	_, by := tickTasks(t, nc, s.ID)
	var gap []uint64
	for seq := range by {
		if seq > stoppedAt && seq <= gapEnd {
			gap = append(gap, seq)
		}
	}
	if len(gap) > 1 {
		t.Errorf("ticks %v of the gap (%d..%d) made a task each, want one at most", gap, stoppedAt+1, gapEnd)
	}
}

// TestScheduleIdempotencyKey: a repeated POST /schedules with the same
// Idempotency-Key (the balancer's retry, a client's) makes one schedule.
// TestScheduleQuota: an owner has at most MaxSchedulesPerOwner schedules
// (each makes tasks forever from one request); the next is a 429, another
// owner is not affected, a keyed repeat of an existing one still answers,
// and deleting one makes room.
func TestScheduleQuota(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	alice := tokenFor(t, "alice", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	bob := tokenFor(t, "bob", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	body := `{"cron":"@daily","task":{"task":"noop"}}`
	key := map[string]string{"Idempotency-Key": "first"}
	first := send(t, http.MethodPost, base+"/schedules", alice, body, key)
	if first.status != http.StatusCreated {
		t.Fatalf("POST /schedules = %d %s", first.status, first.body)
	}
	for range MaxSchedulesPerOwner - 1 {
		postSchedule(t, base, alice, body)
	}
	r := send(t, http.MethodPost, base+"/schedules", alice, body, nil)
	if r.status != http.StatusTooManyRequests || errorCode(t, r) != "rate_limited" {
		t.Fatalf("schedule %d of alice = %d %s, want 429 rate_limited", MaxSchedulesPerOwner+1, r.status, r.body)
	}
	if r := send(t, http.MethodPost, base+"/schedules", alice, body, key); r.status != http.StatusCreated || r.header.Get(replayedHeader) != "true" {
		t.Errorf("a keyed repeat at the quota = %d %s, want 201 replayed", r.status, r.body)
	}
	postSchedule(t, base, bob, body)
	if r := send(t, http.MethodDelete, base+first.header.Get("Location"), alice, "", nil); r.status != http.StatusOK {
		t.Fatalf("DELETE = %d %s", r.status, r.body)
	}
	postSchedule(t, base, alice, body)
}

func TestScheduleIdempotencyKey(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	alice := tokenFor(t, "alice", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	bob := tokenFor(t, "bob", auth.ScopeTasksWrite, auth.ScopeTasksRead)
	key := map[string]string{"Idempotency-Key": "nightly-1"}
	body := `{"cron":"@daily","task":{"task":"report"}}`

	first := send(t, http.MethodPost, base+"/schedules", alice, body, key)
	again := send(t, http.MethodPost, base+"/schedules", alice, `{"task":{"task":"report"}, "cron":"@daily"}`, key)
	if first.status != http.StatusCreated || again.status != http.StatusCreated {
		t.Fatalf("POST twice = %d %s, %d %s; want 201 twice", first.status, first.body, again.status, again.body)
	}
	if first.header.Get("Location") != again.header.Get("Location") || again.header.Get(replayedHeader) != "true" || first.header.Get(replayedHeader) != "" {
		t.Errorf("repeat: Location %q then %q, Idempotent-Replayed %q then %q; want the same schedule, replayed the second time",
			first.header.Get("Location"), again.header.Get("Location"), first.header.Get(replayedHeader), again.header.Get(replayedHeader))
	}
	if r := send(t, http.MethodPost, base+"/schedules", alice, `{"cron":"@hourly","task":{"task":"report"}}`, key); r.status != http.StatusConflict {
		t.Errorf("same key, other body = %d %s, want 409", r.status, r.body)
	}
	if r := send(t, http.MethodPost, base+"/schedules", bob, body, key); r.status != http.StatusCreated || r.header.Get("Location") == first.header.Get("Location") {
		t.Errorf("bob's same key = %d, Location %q; want 201 and another schedule", r.status, r.header.Get("Location"))
	}
	if r := send(t, http.MethodDelete, base+first.header.Get("Location"), alice, "", nil); r.status != http.StatusOK {
		t.Fatalf("DELETE = %d %s", r.status, r.body)
	}
	if r := send(t, http.MethodPost, base+"/schedules", alice, body, key); r.status != http.StatusNotFound {
		t.Errorf("the key of a deleted schedule = %d %s, want 404", r.status, r.body)
	}
	var out struct{ Schedules []scheduleOut }
	r := get(t, base+"/schedules", alice)
	if err := json.Unmarshal(r.body, &out); err != nil || len(out.Schedules) != 0 {
		t.Errorf("alice's schedules = %s, want none", r.body)
	}
}
