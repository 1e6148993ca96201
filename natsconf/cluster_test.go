package natsconf

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/testutil"
)

// clusterEnv sets what compose.yaml gives a node: every password, the
// route password and the route URLs. Not for parallel tests.
func clusterEnv(t *testing.T, routePassword string) map[Role]string {
	t.Helper()
	pw, err := RandomPasswords()
	if err != nil {
		t.Fatal(err)
	}
	for r, p := range pw {
		t.Setenv(PasswordEnv(r), p)
	}
	t.Setenv("NATS_SERVER_NAME", "nats1")
	t.Setenv(RoutePasswordEnv, routePassword)
	t.Setenv(RoutesEnv, RoutesValue(routePassword, "nats1:6222", "nats2:6222", "nats3:6222"))
	return pw
}

// TestClusterConfRoutesAuthenticate: cluster.conf makes routes log in as
// the route user, and dials the other nodes with its password.
func TestClusterConfRoutesAuthenticate(t *testing.T) {
	clusterEnv(t, "pRouteSecret123")
	opts, err := server.ProcessConfigFile("cluster.conf")
	if err != nil {
		t.Fatalf("ProcessConfigFile(cluster.conf) = %v", err)
	}
	if opts.Cluster.Username != RouteUser || opts.Cluster.Password != "pRouteSecret123" {
		t.Errorf("cluster authorization = %q/%q, want %q and the route password", opts.Cluster.Username, opts.Cluster.Password, RouteUser)
	}
	if len(opts.Routes) != 3 {
		t.Fatalf("routes = %v, want the three nodes", opts.Routes)
	}
	for _, u := range opts.Routes {
		pw, _ := u.User.Password()
		if u.User.Username() != RouteUser || pw != "pRouteSecret123" {
			t.Errorf("route %s dials without the route credentials", u.Redacted())
		}
	}
	if len(opts.Users) != len(Roles()) {
		t.Errorf("users = %d, want one per role", len(opts.Users))
	}
}

func TestClusterConfNeedsRoutePassword(t *testing.T) {
	clusterEnv(t, "pRouteSecret123")
	os.Unsetenv(RoutePasswordEnv)
	if _, err := server.ProcessConfigFile("cluster.conf"); err == nil || !strings.Contains(err.Error(), RoutePasswordEnv) {
		t.Errorf("ProcessConfigFile without $%s = %v, want an error naming it", RoutePasswordEnv, err)
	}
}

// authLog records the server's warnings and errors, to see a route
// refused ("rid:N - authentication error").
type authLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *authLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}
func (l *authLog) Noticef(string, ...any)         {}
func (l *authLog) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *authLog) Fatalf(format string, v ...any) { l.add(format, v...) }
func (l *authLog) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *authLog) Debugf(string, ...any)          {}
func (l *authLog) Tracef(string, ...any)          {}
func (l *authLog) refusals() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, "rid:") && strings.Contains(s, "authentication error") {
			n++
		}
	}
	return n
}

// TestStrangerCannotJoinAsRoute attacks a live node configured by
// cluster.conf (on free ports, JetStream off) from a server on the same
// network: without the route password, or with a wrong one, it does not
// become a route and sees none of the node's messages; a node with the
// password does.
func TestStrangerCannotJoinAsRoute(t *testing.T) {
	pw := clusterEnv(t, "pRouteSecret123")
	node := func(t *testing.T, routes string, log server.Logger) *server.Server {
		t.Helper()
		opts, err := server.ProcessConfigFile("cluster.conf")
		if err != nil {
			t.Fatalf("ProcessConfigFile(cluster.conf) = %v", err)
		}
		opts.ServerName = fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", -1
		opts.JetStream, opts.StoreDir = false, t.TempDir()
		opts.Routes = nil
		if routes != "" {
			opts.Routes = server.RoutesFromStr(routes)
		}
		opts.NoSigs = true
		return startNode(t, opts, log)
	}
	seedLog := &authLog{}
	seed := node(t, "", seedLog)
	clusterURL := fmt.Sprintf("127.0.0.1:%d", seed.ClusterAddr().Port)

	// A stranger: a server of its own, without cluster authorization, that
	// dials the node's route port with no credentials, then with wrong ones.
	for i, routeURL := range []string{"nats-route://" + clusterURL, "nats-route://route:wrong@" + clusterURL} {
		before := seedLog.refusals()
		stranger := startNode(t, &server.Options{
			ServerName: fmt.Sprintf("stranger-%d", i), Host: "127.0.0.1", Port: -1, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "scalelab", Host: "127.0.0.1", Port: -1},
			Routes:  server.RoutesFromStr(routeURL),
		}, nil)
		testutil.Eventually(t, 10*time.Second, func() error {
			if seedLog.refusals() <= before {
				seedLog.mu.Lock()
				defer seedLog.mu.Unlock()
				return fmt.Errorf("the node has not refused the stranger's route yet; its log: %q", seedLog.lines)
			}
			return nil
		})
		// The node's count is the one that matters: it registers a route
		// only after the route's CONNECT has passed authorization. The
		// stranger's own count is not checked: nats-server registers a
		// route it dials as soon as the other side's INFO arrives, which
		// the node sends before it reads CONNECT, so the stranger holds
		// half-open routes until each refusal and between its retries.
		if n := seed.NumRoutes(); n != 0 {
			t.Errorf("%s: node has %d routes, want 0", routeURL, n)
		}
		// What a route would carry, in both directions: the stranger's
		// subscriber gets none of the node's messages, and the node's
		// none of the stranger's.
		strangerSub := subscribe(t, stranger, nil, "secret.>")
		seedSub := subscribe(t, seed, pw, "planted.>")
		seedPub := connectNode(t, seed, pw, RoleAdmin)
		strangerPub := connectNode(t, stranger, nil, RoleAdmin)
		for _, nc := range []*nats.Conn{seedPub, strangerPub} {
			subject := "secret.subject"
			if nc == strangerPub {
				subject = "planted.subject"
			}
			if err := nc.Publish(subject, []byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if m, err := strangerSub.NextMsg(500 * time.Millisecond); err == nil {
			t.Errorf("%s: the stranger received %q on %s", routeURL, m.Data, m.Subject)
		}
		if m, err := seedSub.NextMsg(100 * time.Millisecond); err == nil {
			t.Errorf("%s: the node received the stranger's %q on %s", routeURL, m.Data, m.Subject)
		}
		if n := seed.NumRoutes(); n != 0 {
			t.Errorf("%s: node has %d routes after the messages, want 0", routeURL, n)
		}
	}

	// A node with the password joins, and sees the seed's messages.
	peer := node(t, "nats-route://route:pRouteSecret123@"+clusterURL, nil)
	testutil.Eventually(t, 10*time.Second, func() error {
		if seed.NumRoutes() == 0 || peer.NumRoutes() == 0 {
			return fmt.Errorf("routes: seed %d, peer %d", seed.NumRoutes(), peer.NumRoutes())
		}
		return nil
	})
	sub := subscribe(t, peer, pw, "hello")
	pub := connectNode(t, seed, pw, RoleAdmin)
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := pub.Publish("hello", []byte("x")); err != nil {
			return err
		}
		if _, err := sub.NextMsg(200 * time.Millisecond); err != nil {
			return fmt.Errorf("peer: no message from the seed: %w", err)
		}
		return nil
	})
}

// startNode starts a server and stops it at the end of the test.
func startNode(t *testing.T, opts *server.Options, log server.Logger) *server.Server {
	t.Helper()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer(%s) = %v", opts.ServerName, err)
	}
	if log != nil {
		ns.SetLoggerV2(log, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("server %s did not start", opts.ServerName)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// connectNode connects to ns as admin (pw nil: no credentials).
func connectNode(t *testing.T, ns *server.Server, pw map[Role]string, r Role) *nats.Conn {
	t.Helper()
	var opts []nats.Option
	if pw != nil {
		opts = append(opts, nats.UserInfo(string(r), pw[r]))
	}
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", ns.Name(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// subscribe subscribes to subject on ns and flushes.
func subscribe(t *testing.T, ns *server.Server, pw map[Role]string, subject string) *nats.Subscription {
	t.Helper()
	nc := connectNode(t, ns, pw, RoleAdmin)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestComposeGivesTheNodesTheirRoutes: compose.yaml builds the route URLs
// as RoutesValue does, from the route password, and the nats CLI context
// takes replies in admin's inbox (the only one the services answer).
func TestComposeGivesTheNodesTheirRoutes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := RoutesEnv + ": '" + RoutesValue("${"+RoutePasswordEnv+"}", "nats1:6222", "nats2:6222", "nats3:6222") + "'"
	if !strings.Contains(string(b), want) {
		t.Errorf("compose.yaml does not set the nodes' routes as\n  %s", want)
	}
	if !strings.Contains(string(b), RoutePasswordEnv+": ${"+RoutePasswordEnv+":?") {
		t.Errorf("compose.yaml does not require %s for the nodes", RoutePasswordEnv)
	}
	var ctx struct {
		InboxPrefix string `json:"inbox_prefix"`
	}
	b, err = os.ReadFile("compose-context.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ctx); err != nil {
		t.Fatal(err)
	}
	if want := natsconn.InboxPrefix(string(RoleAdmin)); ctx.InboxPrefix != want {
		t.Errorf("compose-context.json inbox_prefix = %q, want %q", ctx.InboxPrefix, want)
	}
}
