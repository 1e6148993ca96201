package natsconf

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

// TestOnlyTheProvisionerUpdatesStreams (issue #24): the gateway and the
// worker use the task streams and bucket but can neither update nor
// create them (an update that shrinks MaxMsgs or MaxBytes purges a
// stream, around the admin-only purge); cachesvc can touch only its own
// bucket; admin provisions.
func TestOnlyTheProvisionerUpdatesStreams(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	_, adminJS, adminV := connectAs(t, ns, pw, RoleAdmin)
	ctx := t.Context()
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}
	taskStreams := []string{task.Stream, task.DelayedStream, task.DLQStream, "KV_" + task.Bucket}

	for _, r := range []Role{RoleGateway, RoleWorker, RoleCacheSvc, RoleBalancer, RoleDBSvc} {
		nc, js, v := connectAs(t, ns, pw, r)
		for _, name := range taskStreams {
			t.Run(string(r)+" cannot update "+name, func(t *testing.T) {
				before, err := adminJS.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				shrunk := before.CachedInfo().Config
				shrunk.MaxMsgs, shrunk.MaxBytes = 1, 1
				if _, err := js.UpdateStream(shortCtx(t), shrunk); err == nil {
					t.Fatalf("UpdateStream(%s) = nil error, want refused", name)
				}
				v.expect(t, "$JS.API.STREAM.UPDATE."+name)
				after, err := adminJS.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if c := after.CachedInfo().Config; c.MaxMsgs != before.CachedInfo().Config.MaxMsgs || c.MaxBytes != before.CachedInfo().Config.MaxBytes {
					t.Errorf("%s limits after %s's update = %d msgs %d bytes, want unchanged", name, r, c.MaxMsgs, c.MaxBytes)
				}
			})
		}
		t.Run(string(r)+" cannot create a task stream", func(t *testing.T) {
			if err := nc.Publish("$JS.API.STREAM.CREATE."+task.DLQStream, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			v.expect(t, "$JS.API.STREAM.CREATE."+task.DLQStream)
		})
	}

	t.Run("gateway and worker open the streams admin provisioned", func(t *testing.T) {
		for _, r := range []Role{RoleGateway, RoleWorker} {
			_, js, v := connectAs(t, ns, pw, r)
			if _, err := task.Open(ctx, js, task.DefaultProvisionConfig(), quietLog()); err != nil {
				t.Errorf("%s: task.Open = %v", r, err)
			}
			v.none(t)
		}
	})
	t.Run("cachesvc provisions its own bucket", func(t *testing.T) {
		_, js, v := connectAs(t, ns, pw, RoleCacheSvc)
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket, History: 1}); err != nil {
			t.Fatalf("cachesvc: create bucket = %v", err)
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket, History: 1, MaxBytes: 1 << 20}); err != nil {
			t.Fatalf("cachesvc: update bucket = %v", err)
		}
		v.none(t)
	})
	t.Run("admin updates", func(t *testing.T) {
		cfg := task.DefaultProvisionConfig()
		cfg.MaxQueueMsgs = 1000
		if _, err := task.Provision(ctx, adminJS, cfg); err != nil {
			t.Errorf("admin: task.Provision with a new limit = %v", err)
		}
		adminV.none(t)
	})
}

// TestOpenWaitsForTheProvisioner: before admin has provisioned, task.Open
// says so (and the role retries); it creates nothing itself.
func TestOpenWaitsForTheProvisioner(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	_, gwJS, gwV := connectAs(t, ns, pw, RoleGateway)
	_, adminJS, _ := connectAs(t, ns, pw, RoleAdmin)
	if _, err := task.Open(t.Context(), gwJS, task.DefaultProvisionConfig(), quietLog()); err == nil {
		t.Fatalf("task.Open before provisioning = nil error, want task.ErrNotProvisioned")
	}
	gwV.none(t)
	if _, err := adminJS.Stream(t.Context(), task.DelayedStream); err == nil {
		t.Errorf("stream %s exists after the gateway's Open, want nothing created", task.DelayedStream)
	}
}

// TestRepliesOnlyToCallers (issue #24): a responder may publish only into
// the inboxes of the roles allowed to call it, so a compromised role
// cannot forge the reply to a request it was never sent.
func TestRepliesOnlyToCallers(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	adminNC, _, _ := connectAs(t, ns, pw, RoleAdmin)
	gwNC, _, gwV := connectAs(t, ns, pw, RoleGateway)
	wkNC, _, wkV := connectAs(t, ns, pw, RoleWorker)
	dbNC, _, dbV := connectAs(t, ns, pw, RoleDBSvc)
	csNC, _, csV := connectAs(t, ns, pw, RoleCacheSvc)
	balNC, _, balV := connectAs(t, ns, pw, RoleBalancer)

	// A worker forges the answer to a gateway's login lookup: it knows
	// the reply subject (here from admin, who sees every request, as a
	// worker might from a gateway's svc.process requests and a guess).
	t.Run("worker cannot forge a reply to the gateway's db.users.get", func(t *testing.T) {
		requests, err := adminNC.SubscribeSync(wire.DBUserGet)
		if err != nil {
			t.Fatal(err)
		}
		defer requests.Unsubscribe()
		if err := adminNC.Flush(); err != nil {
			t.Fatal(err)
		}
		type result struct {
			msg *nats.Msg
			err error
		}
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			m, err := natsconn.NewReplyMux(gwNC, wire.DBService).Request(ctx, nats.NewMsg(wire.DBUserGet))
			done <- result{m, err}
		}()
		req, err := requests.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("no db.users.get request seen: %v", err)
		}
		if want := natsconn.ReplyInbox(string(RoleGateway), wire.DBService) + "."; !strings.HasPrefix(req.Reply, want) {
			t.Fatalf("db.users.get reply subject = %q, want under %s", req.Reply, want)
		}
		forged, _ := json.Marshal(map[string]any{"name": "alice", "scopes": []string{"admin"}, "hash": "$2a$forged"})
		if err := wkNC.Publish(req.Reply, forged); err != nil {
			t.Fatal(err)
		}
		wkV.expect(t, req.Reply)
		if err := csNC.Publish(req.Reply, forged); err != nil {
			t.Fatal(err)
		}
		csV.expect(t, req.Reply)
		if err := balNC.Publish(req.Reply, forged); err != nil {
			t.Fatal(err)
		}
		balV.expect(t, req.Reply)
		// dbsvc, the real responder, answers.
		if err := dbNC.Publish(req.Reply, []byte(`{"name":"alice"}`)); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatalf("gateway: db.users.get = %v, want dbsvc's reply", r.err)
		}
		if string(r.msg.Data) != `{"name":"alice"}` {
			t.Errorf("gateway got reply %s, want dbsvc's (a forged reply got through)", r.msg.Data)
		}
		dbV.none(t)
	})

	// Each row is a publish into an inbox that does not take the role's
	// replies: another role's main inbox, or the reply inbox of a service
	// the role does not run.
	for _, tc := range []struct {
		role  Role
		nc    *nats.Conn
		v     *violations
		inbox string
	}{
		{RoleWorker, wkNC, wkV, natsconn.InboxPrefix(string(RoleGateway))},
		{RoleWorker, wkNC, wkV, natsconn.ReplyInbox(string(RoleGateway), wire.DBService)},
		{RoleWorker, wkNC, wkV, natsconn.ReplyInbox(string(RoleGateway), cache.ServiceName)},
		{RoleWorker, wkNC, wkV, natsconn.InboxPrefix(string(RoleDBSvc))},
		{RoleWorker, wkNC, wkV, natsconn.InboxPrefix(string(RoleCacheSvc))},
		{RoleDBSvc, dbNC, dbV, natsconn.InboxPrefix(string(RoleGateway))},
		{RoleDBSvc, dbNC, dbV, natsconn.ReplyInbox(string(RoleGateway), wire.ProcessService)},
		{RoleDBSvc, dbNC, dbV, natsconn.InboxPrefix(string(RoleWorker))},
		{RoleDBSvc, dbNC, dbV, natsconn.InboxPrefix(string(RoleCacheSvc))},
		{RoleGateway, gwNC, gwV, natsconn.InboxPrefix(string(RoleWorker))},
		{RoleGateway, gwNC, gwV, natsconn.InboxPrefix(string(RoleDBSvc))},
		{RoleGateway, gwNC, gwV, natsconn.ReplyInbox(string(RoleGateway), wire.DBService)},
		{RoleGateway, gwNC, gwV, natsconn.ReplyInbox(string(RoleGateway), wire.ProcessService)},
		{RoleCacheSvc, csNC, csV, natsconn.InboxPrefix(string(RoleGateway))},
		{RoleCacheSvc, csNC, csV, natsconn.InboxPrefix(string(RoleAdmin))},
		{RoleBalancer, balNC, balV, natsconn.InboxPrefix(string(RoleGateway))},
		{RoleBalancer, balNC, balV, natsconn.InboxPrefix(string(RoleAdmin))},
	} {
		subject := tc.inbox + ".x.y"
		t.Run(string(tc.role)+" cannot publish into "+tc.inbox, func(t *testing.T) {
			if err := tc.nc.Publish(subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			tc.v.expect(t, subject)
		})
	}
	t.Run("nobody but admin publishes into a plain _INBOX.", func(t *testing.T) {
		for _, c := range []struct {
			nc *nats.Conn
			v  *violations
		}{{gwNC, gwV}, {wkNC, wkV}, {dbNC, dbV}} {
			if err := c.nc.Publish("_INBOX.abc.def", nil); err != nil {
				t.Fatal(err)
			}
			c.v.expect(t, "_INBOX.abc.def")
		}
	})

	// The calls the platform makes still get their answers.
	t.Run("callers still get their replies", func(t *testing.T) {
		// Fresh connections: the ones above have had their violations.
		adminNC, _, adminV := connectAs(t, ns, pw, RoleAdmin)
		gwNC, _, gwV := connectAs(t, ns, pw, RoleGateway)
		wkNC, _, wkV := connectAs(t, ns, pw, RoleWorker)
		dbNC, _, dbV := connectAs(t, ns, pw, RoleDBSvc)
		csNC, _, csV := connectAs(t, ns, pw, RoleCacheSvc)
		balNC, _, balV := connectAs(t, ns, pw, RoleBalancer)
		respond := func(nc *nats.Conn, subject string) {
			t.Helper()
			sub, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(`"ok"`)) })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		respond(wkNC, wire.ProcessSubject)
		respond(wkNC, "$SRV.STATS."+wire.ProcessService)
		respond(wkNC, "$SRV.PING."+wire.ProcessService)
		// Every dbsvc endpoint the gateway calls.
		gatewayDB := []string{wire.DBData, wire.DBItemGet, wire.DBItemCreate, wire.DBItemUpdate,
			wire.DBItemPatch, wire.DBItemList, wire.DBItemDelete, wire.DBUserGet}
		for _, s := range gatewayDB {
			respond(dbNC, s)
		}
		respond(dbNC, wire.DBUserPut)
		respond(dbNC, "$SRV.STATS."+wire.DBService)
		respond(gwNC, cache.SubjectInvalidate)
		respond(gwNC, "$SRV.STATS."+cache.ServiceName)
		// The second ping of a known process, on its own subject.
		onePeer := "$SRV.PING." + cache.ServiceName + ".GW1"
		respond(gwNC, onePeer)
		// As the clients do: dbsvc's and the process service's clients
		// through their reply inboxes, stats, pings and invalidations
		// through Gather, admin (the nats CLI, up) through its main inbox.
		ctx := t.Context()
		type call struct {
			who     string
			nc      *nats.Conn
			service string
			subject string
		}
		calls := []call{
			{"gateway", gwNC, wire.ProcessService, wire.ProcessSubject},
			{"admin", adminNC, wire.DBService, wire.DBUserPut},
		}
		for _, s := range gatewayDB {
			calls = append(calls, call{"gateway", gwNC, wire.DBService, s})
		}
		for _, c := range calls {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			m, err := natsconn.NewReplyMux(c.nc, c.service).Request(rctx, nats.NewMsg(c.subject))
			cancel()
			if err != nil || string(m.Data) != `"ok"` {
				t.Errorf("%s: request %s = %v, want the responder's reply", c.who, c.subject, err)
			}
		}
		for _, c := range []struct {
			who     string
			nc      *nats.Conn
			subject string
			service string
		}{
			{"balancer", balNC, "$SRV.STATS." + wire.ProcessService, ""},
			{"balancer", balNC, "$SRV.STATS." + wire.DBService, ""},
			{"balancer", balNC, "$SRV.STATS." + cache.ServiceName, ""},
			{"cachesvc", csNC, cache.SubjectInvalidate, cache.ServiceName},
			{"cachesvc", csNC, "$SRV.STATS." + cache.ServiceName, ""},
			{"gateway", gwNC, cache.SubjectInvalidate, cache.ServiceName},
			{"gateway", gwNC, onePeer, ""},
			{"cachesvc", csNC, onePeer, ""},
		} {
			replies, err := natsconn.Gather(ctx, c.nc, c.subject, nil, natsconn.GatherOptions{
				Stall: 2 * time.Second, Enough: func(n int) bool { return n >= 1 }, Service: c.service,
			})
			if err != nil || len(replies) != 1 || string(replies[0].Data) != `"ok"` {
				t.Errorf("%s: gather %s = %d replies, %v; want the responder's reply", c.who, c.subject, len(replies), err)
			}
		}
		if m, err := adminNC.Request("$SRV.PING."+wire.ProcessService, nil, 2*time.Second); err != nil || string(m.Data) != `"ok"` {
			t.Errorf("admin: request $SRV.PING.%s = %v, want the responder's reply", wire.ProcessService, err)
		}
		for _, v := range []*violations{adminV, gwV, wkV, dbV, csV, balV} {
			v.none(t)
		}
	})
}
