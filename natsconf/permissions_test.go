package natsconf

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

var update = flag.Bool("update", false, "rewrite authorization.conf from the permission table")

func TestAuthorizationConfUpToDate(t *testing.T) {
	t.Parallel()
	want := RenderAuthorization()
	if *update {
		if err := os.WriteFile("authorization.conf", []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("authorization.conf")
	if err != nil {
		t.Fatalf("read authorization.conf: %v (generate it with: go generate ./natsconf)", err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("authorization.conf is stale; regenerate it with: go generate ./natsconf\n(-want +got):\n%s", diff)
	}
}

// TestRenderedAuthorizationMatchesUsers: the block the clustered configs
// include grants exactly what the embedded server grants. Not parallel:
// it sets the password variables in the environment.
func TestRenderedAuthorizationMatchesUsers(t *testing.T) {
	pw, err := RandomPasswords()
	if err != nil {
		t.Fatal(err)
	}
	for r, p := range pw {
		t.Setenv(PasswordEnv(r), p)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authorization.conf"), []byte(RenderAuthorization()), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\ninclude authorization.conf\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("ProcessConfigFile(rendered block) = %v", err)
	}
	type user struct {
		Name, Password string
		Permissions    *server.Permissions
	}
	simplify := func(us []*server.User) []user {
		var out []user
		for _, u := range us {
			out = append(out, user{u.Username, u.Password, u.Permissions})
		}
		return out
	}
	want, got := simplify(Users(pw)), simplify(opts.Users)
	if len(want) != len(Roles()) {
		t.Fatalf("Users() has %d users, want one per role (%d)", len(want), len(Roles()))
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("rendered authorization differs from Users() (-Users +rendered):\n%s", diff)
	}
}

func TestRenderedAuthorizationNeedsEveryPassword(t *testing.T) {
	t.Setenv(PasswordEnv(RoleGateway), "")
	os.Unsetenv(PasswordEnv(RoleGateway))
	conf := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(conf, []byte(RenderAuthorization()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ProcessConfigFile(conf); err == nil || !strings.Contains(err.Error(), PasswordEnv(RoleGateway)) {
		t.Errorf("ProcessConfigFile without $%s = %v, want an error naming it", PasswordEnv(RoleGateway), err)
	}
}

func TestRandomPasswords(t *testing.T) {
	t.Parallel()
	a, err := RandomPasswords()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RandomPasswords()
	seen := map[string]bool{}
	for _, r := range Roles() {
		p := a[r]
		if len(p) != 32 || !unicode.IsLetter(rune(p[0])) || strings.Trim(p, passwordChars) != "" {
			t.Errorf("password of %s = %q, want 32 letters and digits starting with a letter", r, p)
		}
		if seen[p] || p == b[r] {
			t.Errorf("password of %s = %q repeats", r, p)
		}
		seen[p] = true
	}
}

// violations collects the permission violations the server reports to
// one connection.
type violations struct {
	mu   sync.Mutex
	errs []string
	new  chan struct{}
}

func (v *violations) add(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
	select {
	case v.new <- struct{}{}:
	default:
	}
}

// expect waits until a violation mentioning subject has been reported.
func (v *violations) expect(t *testing.T, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		v.mu.Lock()
		for _, e := range v.errs {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, `"`+subject) {
				v.mu.Unlock()
				return
			}
		}
		got := strings.Join(v.errs, "\n")
		v.mu.Unlock()
		select {
		case <-v.new:
		case <-deadline:
			t.Fatalf("no permissions violation for %q after 5s; got:\n%s", subject, got)
		}
	}
}

// none fails if any violation was reported.
func (v *violations) none(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.errs) > 0 {
		t.Errorf("unexpected permission violations:\n%s", strings.Join(v.errs, "\n"))
	}
}

// connectAs connects to ns as role, with the role's inbox prefix as
// natsconn sets it.
func connectAs(t *testing.T, ns *server.Server, pw map[Role]string, r Role) (*nats.Conn, jetstream.JetStream, *violations) {
	t.Helper()
	v := &violations{new: make(chan struct{}, 1)}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(string(r), pw[r]),
		nats.CustomInboxPrefix(natsconn.InboxPrefix(string(r))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { v.add(err) }))
	if err != nil {
		t.Fatalf("connect as %s: %v", r, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, v
}

// shortCtx bounds a call that a violation makes wait for a reply that
// never comes.
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

// TestPermissions runs each role's credentials against the embedded
// server with the table on: the rights issue #6 takes away are refused
// with a permissions violation, and the traffic each role needs works.
func TestPermissions(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)

	if _, err := nats.Connect(ns.ClientURL()); err == nil {
		t.Errorf("connect without credentials: nil error, want an authorization error")
	}
	if _, err := nats.Connect(ns.ClientURL(), nats.UserInfo(string(RoleGateway), pw[RoleWorker])); err == nil {
		t.Errorf("connect as gateway with the worker's password: nil error, want an authorization error")
	}

	_, adminJS, adminV := connectAs(t, ns, pw, RoleAdmin)
	gwNC, gwJS, gwV := connectAs(t, ns, pw, RoleGateway)
	wkNC, wkJS, wkV := connectAs(t, ns, pw, RoleWorker)
	dbNC, _, dbV := connectAs(t, ns, pw, RoleDBSvc)
	_, csJS, csV := connectAs(t, ns, pw, RoleCacheSvc)
	ctx := t.Context()

	// What the roles need: admin provisions the task streams, cachesvc
	// the cache bucket; the gateway and the worker open the task streams,
	// the gateway submits, the worker consumes and acks.
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}
	if _, err := task.Open(ctx, gwJS, task.DefaultProvisionConfig(), quietLog()); err != nil {
		t.Fatalf("gateway: task.Open = %v", err)
	}
	if _, err := task.Open(ctx, wkJS, task.DefaultProvisionConfig(), quietLog()); err != nil {
		t.Fatalf("worker: task.Open = %v", err)
	}
	cacheKV, err := csJS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket, History: 1})
	if err != nil {
		t.Fatalf("cachesvc: create bucket %s = %v", cache.Bucket, err)
	}
	if _, err := cacheKV.Put(ctx, "k", []byte(`"v"`)); err != nil {
		t.Fatalf("cachesvc: put = %v", err)
	}
	gwKV, err := gwJS.KeyValue(ctx, cache.Bucket)
	if err != nil {
		t.Fatalf("gateway: open bucket %s = %v", cache.Bucket, err)
	}
	if e, err := gwKV.Get(ctx, "k"); err != nil || string(e.Value()) != `"v"` {
		t.Fatalf("gateway: get k = %v, %v", e, err)
	}
	w, err := gwKV.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("gateway: watch %s = %v", cache.Bucket, err)
	}
	if err := w.Stop(); err != nil {
		t.Errorf("gateway: stop watch = %v", err)
	}
	if _, err := gwJS.Publish(ctx, task.Subject(task.DefaultQueue, "noop"), []byte(`{}`)); err != nil {
		t.Fatalf("gateway: publish a task = %v", err)
	}
	defaultConsumer := task.QueueConsumer(task.DefaultQueue)
	cons, err := wkJS.CreateOrUpdateConsumer(ctx, task.Stream, jetstream.ConsumerConfig{
		Durable: defaultConsumer, AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: task.QueueSubjects(task.DefaultQueue),
	})
	if err != nil {
		t.Fatalf("worker: create consumer %s = %v", defaultConsumer, err)
	}
	// A worker serving another queue creates its consumer too (one
	// filter: the filter is in the API subject), and reads a queue's
	// oldest message for its age.
	if _, err := wkJS.CreateOrUpdateConsumer(ctx, task.Stream, jetstream.ConsumerConfig{
		Durable: task.QueueConsumer("critical"), AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: task.QueueSubjects("critical"),
	}); err != nil {
		t.Fatalf("worker: create consumer %s = %v", task.QueueConsumer("critical"), err)
	}
	if wkStream, err := wkJS.Stream(ctx, task.Stream); err != nil {
		t.Fatalf("worker: Stream(TASKS) = %v", err)
	} else if _, err := wkStream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(task.QueueSubjects(task.DefaultQueue)[0])); err != nil {
		t.Fatalf("worker: oldest message of the default queue = %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("worker: fetch = %v", err)
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	if msg == nil {
		t.Fatalf("worker: fetch got no task (%v)", batch.Error())
	}

	// A gateway cannot consume tasks: no consumer, no pull, no ack.
	t.Run("gateway cannot create a consumer on TASKS", func(t *testing.T) {
		_, err := gwJS.CreateOrUpdateConsumer(shortCtx(t), task.Stream, jetstream.ConsumerConfig{Durable: "thief", FilterSubject: task.SubjectPrefix + ">"})
		if err == nil {
			t.Fatalf("CreateOrUpdateConsumer = nil error, want refused")
		}
		gwV.expect(t, "$JS.API.CONSUMER.CREATE.TASKS.thief")
	})
	t.Run("gateway cannot pull from TASKS", func(t *testing.T) {
		if _, err := gwNC.Request("$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-default", []byte(`{"batch":1}`), 500*time.Millisecond); err == nil {
			t.Fatalf("MSG.NEXT request = nil error, want refused")
		}
		gwV.expect(t, "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-default")
		// It may look the queue's consumer up (GET /queues: its depth), and
		// still not pull through it.
		gwCons, err := gwJS.Consumer(shortCtx(t), task.Stream, defaultConsumer)
		if err != nil {
			t.Fatalf("Consumer(TASKS, workers-default) = %v, want its info (GET /queues)", err)
		}
		if _, err := gwCons.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
			t.Errorf("gateway: Next through workers-default = nil error, want refused")
		}
		gwV.expect(t, "$JS.API.CONSUMER.MSG.NEXT.TASKS.workers-default")
	})
	t.Run("gateway reads a queue's oldest task", func(t *testing.T) {
		s, err := gwJS.Stream(shortCtx(t), task.Stream)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetMsg(shortCtx(t), 1, jetstream.WithGetMsgSubject(task.SubjectPrefix+">")); err != nil {
			t.Errorf("gateway: first message on %s> = %v, want it (GET /queues: oldest age)", task.SubjectPrefix, err)
		}
	})
	t.Run("gateway cannot ack a task", func(t *testing.T) {
		if !strings.HasPrefix(msg.Reply(), "$JS.ACK.TASKS.workers-default.") {
			t.Fatalf("task reply subject = %q, want $JS.ACK.TASKS.workers-default.…", msg.Reply())
		}
		if err := gwNC.Publish(msg.Reply(), []byte("+ACK")); err != nil {
			t.Fatal(err)
		}
		gwV.expect(t, "$JS.ACK.TASKS.workers-default.")
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 1 {
			t.Errorf("ack pending after the gateway's ack = %d, want 1 (not acked)", info.NumAckPending)
		}
		if err := msg.Ack(); err != nil {
			t.Errorf("worker: ack = %v", err)
		}
	})
	t.Run("gateway cannot add users", func(t *testing.T) {
		if err := gwNC.Publish(wire.DBUserPut, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		gwV.expect(t, wire.DBUserPut)
	})

	// A worker cannot delete streams nor touch the cache bucket.
	for _, s := range []string{task.Stream, task.DLQStream, task.DelayedStream, "KV_" + task.Bucket, "KV_" + cache.Bucket} {
		t.Run("worker cannot delete "+s, func(t *testing.T) {
			if _, err := wkNC.Request("$JS.API.STREAM.DELETE."+s, nil, 500*time.Millisecond); err == nil {
				t.Fatalf("STREAM.DELETE.%s = nil error, want refused", s)
			}
			wkV.expect(t, "$JS.API.STREAM.DELETE."+s)
		})
	}
	t.Run("worker cannot purge TASKS", func(t *testing.T) {
		if _, err := wkNC.Request("$JS.API.STREAM.PURGE.TASKS", nil, 500*time.Millisecond); err == nil {
			t.Fatalf("STREAM.PURGE.TASKS = nil error, want refused")
		}
		wkV.expect(t, "$JS.API.STREAM.PURGE.TASKS")
	})
	t.Run("worker cannot open the cache bucket", func(t *testing.T) {
		if _, err := wkJS.KeyValue(shortCtx(t), cache.Bucket); err == nil {
			t.Fatalf("KeyValue(cache) = nil error, want refused")
		}
		wkV.expect(t, "$JS.API.STREAM.INFO.KV_cache")
	})
	t.Run("worker cannot read cache keys", func(t *testing.T) {
		if _, err := wkNC.Request("$JS.API.DIRECT.GET.KV_cache.$KV.cache.k", nil, 500*time.Millisecond); err == nil {
			t.Fatalf("DIRECT.GET = nil error, want refused")
		}
		wkV.expect(t, "$JS.API.DIRECT.GET.KV_cache.$KV.cache.k")
		if _, err := wkNC.Request("$JS.API.STREAM.MSG.GET.KV_cache", []byte(`{"seq":1}`), 500*time.Millisecond); err == nil {
			t.Fatalf("STREAM.MSG.GET = nil error, want refused")
		}
		wkV.expect(t, "$JS.API.STREAM.MSG.GET.KV_cache")
	})
	t.Run("worker cannot consume the cache bucket", func(t *testing.T) {
		if _, err := wkJS.CreateOrUpdateConsumer(shortCtx(t), "KV_"+cache.Bucket, jetstream.ConsumerConfig{Name: "peek"}); err == nil {
			t.Fatalf("consumer on KV_cache = nil error, want refused")
		}
		wkV.expect(t, "$JS.API.CONSUMER.CREATE.KV_cache")
	})
	t.Run("worker cannot write or watch cache keys", func(t *testing.T) {
		if err := wkNC.Publish("$KV.cache.k", []byte("x")); err != nil {
			t.Fatal(err)
		}
		wkV.expect(t, "$KV.cache.k")
		if _, err := wkNC.SubscribeSync("$KV.cache.>"); err != nil {
			t.Fatal(err)
		}
		wkV.expect(t, "$KV.cache.>")
	})
	t.Run("worker cannot read other roles' replies", func(t *testing.T) {
		for _, s := range []string{"_INBOX.>", natsconn.InboxPrefix(string(RoleGateway)) + ".>"} {
			if _, err := wkNC.SubscribeSync(s); err != nil {
				t.Fatal(err)
			}
			wkV.expect(t, s)
		}
	})
	t.Run("worker cannot call dbsvc", func(t *testing.T) {
		for _, s := range []string{wire.DBUserGet, wire.DBItemCreate, wire.DBItemUpdate, wire.DBItemPatch, wire.DBItemDelete} {
			if err := wkNC.Publish(s, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			wkV.expect(t, s)
		}
	})

	// A responder's reply goes only to an inbox: a requester cannot name
	// a JetStream API subject as its reply and have the responder call it.
	t.Run("a reply cannot be aimed at the JetStream API", func(t *testing.T) {
		sub, err := wkNC.SubscribeSync(wire.ProcessSubject)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := wkNC.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := gwNC.PublishRequest(wire.ProcessSubject, "$JS.API.STREAM.DELETE.TASKS", nil); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("worker: no request: %v", err)
		}
		if err := m.Respond(nil); err != nil {
			t.Fatal(err)
		}
		wkV.expect(t, "$JS.API.STREAM.DELETE.TASKS")
		if _, err := adminJS.Stream(ctx, task.Stream); err != nil {
			t.Errorf("stream TASKS after the aimed reply: %v, want it still there", err)
		}
	})

	t.Run("dbsvc only answers", func(t *testing.T) {
		for _, s := range []string{"$KV.cache.k", "$KV.tasks.k", "$JS.API.INFO", task.Subject(task.DefaultQueue, "noop"), wire.ProcessSubject} {
			if err := dbNC.Publish(s, nil); err != nil {
				t.Fatal(err)
			}
			dbV.expect(t, s)
		}
	})
	t.Run("cachesvc purges the cache bucket, nothing else", func(t *testing.T) {
		s, err := csJS.Stream(ctx, "KV_"+cache.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err != nil {
			t.Errorf("cachesvc: purge KV_cache = %v", err)
		}
		if _, err := csJS.Stream(shortCtx(t), task.Stream); err == nil {
			t.Errorf("cachesvc: Stream(TASKS) = nil error, want refused")
		}
		csV.expect(t, "$JS.API.STREAM.INFO.TASKS")
	})
	t.Run("admin can delete", func(t *testing.T) {
		if err := adminJS.DeleteConsumer(ctx, task.Stream, defaultConsumer); err != nil {
			t.Errorf("admin: delete consumer = %v", err)
		}
		if err := adminJS.DeleteStream(ctx, task.DLQStream); err != nil {
			t.Errorf("admin: delete stream %s = %v", task.DLQStream, err)
		}
		if _, err := adminJS.Stream(ctx, task.DLQStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream %s after delete: %v, want not found", task.DLQStream, err)
		}
		adminV.none(t)
	})
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startSecured starts the embedded server with the permission table on (a
// random password per role), stopped at the end of the test.
func startSecured(t *testing.T) (*server.Server, map[Role]string) {
	t.Helper()
	pw, err := RandomPasswords()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := StartEmbedded(Embedded{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir(), Passwords: pw},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns, pw
}
