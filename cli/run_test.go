package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/natsconf/natstest"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error
	}{
		{"no command", nil, nil, "no command"},
		{"unknown command", []string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{"unknown flag", []string{"worker", "--nope"}, nil, "nope"},
		{"gateway without secret", []string{"gateway"}, nil, "SCALELAB_JWT_SECRET is required"},
		{"gateway with short secret", []string{"gateway"}, map[string]string{"SCALELAB_JWT_SECRET": "short"}, "at least 32 bytes"},
		{"bad env value", []string{"worker"}, map[string]string{"SCALELAB_CONCURRENCY": "many"}, "SCALELAB_CONCURRENCY"},
		{"bad worker flag", []string{"worker", "--concurrency", "0"}, nil, "--concurrency"},
		{"bad balancer backend", []string{"balancer", "--backends", "ftp://x"}, nil, "--backends"},
		{"bad log level", []string{"cachesvc", "--log-level", "loud"}, nil, "--log-level"},
		{"stray argument", []string{"dbsvc", "extra"}, nil, "unexpected arguments"},
		{"up with no gateways", []string{"up", "--gateway-addrs", ""}, nil, "--gateway-addrs"},
		{"up with gc off", []string{"up", "--gc-percent", "0"}, nil, "--gc-percent"},
		{"token without secret", []string{"token"}, nil, "SCALELAB_JWT_SECRET"},
		{"bench without scenario", []string{"bench"}, nil, "name one scenario"},
		{"bench unknown scenario", []string{"bench", "speed"}, nil, `no scenario "speed"`},
		{"bench elsewhere", []string{"bench", "--url", "http://example.com", "--token", "t", "cache"}, nil, "only sent to this machine"},
		{"bench url without token", []string{"bench", "--url", "http://127.0.0.1:8000", "cache"}, nil, "token"},
		{"bench bad duration", []string{"bench", "--duration", "1ms", "cache"}, nil, "--duration"},
		{"bench compare one file", []string{"bench", "compare", "a.json"}, nil, "two report.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := run(ctx, tt.args, env(tt.env), io.Discard, io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("run(%q) = %v, want a usage error (exit 2)", tt.args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %q, want it to mention %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	err := run(t.Context(), []string{"token", "--sub", "alice", "--scope", "data:read", "--ttl", "10m"},
		env(map[string]string{"SCALELAB_JWT_SECRET": testSecret}), &out, io.Discard)
	if err != nil {
		t.Fatalf("run(token) = %v", err)
	}
	keys := auth.Keys{Secret: []byte(testSecret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	claims, err := auth.NewVerifier(keys).Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("Verify(printed token) = %v", err)
	}
	if claims.Subject != "alice" || !claims.HasScope("data:read") || claims.HasScope("tasks:write") {
		t.Errorf("token claims = %+v, want sub alice with only data:read", claims)
	}
	if left := time.Until(claims.ExpiresAt.Time); left > 10*time.Minute || left < 9*time.Minute {
		t.Errorf("token expires in %v, want about 10m", left)
	}
}

// TestRolesAsSeparateCommands runs each role through its own subcommand,
// as separate processes would, against one external NATS server, and
// drives the API through the balancer.
func TestRolesAsSeparateCommands(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)

	freeAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	gw, bal := freeAddr(), freeAddr()
	vars := env(map[string]string{"SCALELAB_NATS_URL": ns.ClientURL(), "SCALELAB_JWT_SECRET": testSecret, "SCALELAB_LOG_FORMAT": "json"})
	commands := [][]string{
		{"dbsvc", "--addr", freeAddr(), "--data", t.TempDir(), "--seed-rows", "1000"},
		{"cachesvc", "--addr", freeAddr()},
		{"worker", "--id", "w1", "--report-duration", "50ms"},
		{"gateway", "--id", "g1", "--addr", gw},
		{"balancer", "--addr", bal, "--admin-addr", freeAddr(), "--backends", "http://" + gw},
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, len(commands))
	logs := &syncBuffer{}
	for _, args := range commands {
		go func() {
			if err := run(ctx, args, vars, io.Discard, logs); err != nil {
				done <- fmt.Errorf("%s: %w", args[0], err)
				return
			}
			done <- nil
		}()
	}
	// The provisioner comes last here, to show that the gateway and the
	// worker wait for the task streams rather than create them.
	if err := run(t.Context(), []string{"tasks", "provision"}, vars, io.Discard, io.Discard); err != nil {
		t.Fatalf("tasks provision = %v", err)
	}
	defer func() {
		cancel()
		for range commands {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run() after cancel = %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("a role did not stop 30s after cancel")
				return
			}
		}
		if t.Failed() {
			t.Logf("logs:\n%s", tail(logs.String(), 4000))
		}
	}()

	keys := auth.Keys{Secret: []byte(testSecret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	tok, _, _ := keys.Issue("dev", auth.AllScopes, time.Hour, time.Now())
	p := &upRun{base: "http://" + bal}
	testutil.Eventually(t, 30*time.Second, func() error {
		r, err := p.try(t, http.MethodGet, "/data", "Bearer "+tok, nil)
		if err != nil {
			return err
		}
		if r.status != http.StatusOK {
			return fmt.Errorf("GET /data = %d %s", r.status, r.body)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		r := p.do(t, http.MethodGet, "/process", "Bearer "+tok, nil)
		if r.status != http.StatusOK || r.servedBy != "g1" {
			return fmt.Errorf("GET /process = %d %s (served by %q)", r.status, r.body, r.servedBy)
		}
		return nil
	})
	r := p.do(t, http.MethodPost, "/longtask", "Bearer "+tok, []byte(`{"task":"report"}`))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /longtask = %d %s", r.status, r.body)
	}
	id := decodeJSON[map[string]string](t, r)["task_id"]
	testutil.Eventually(t, 20*time.Second, func() error {
		r := p.do(t, http.MethodGet, "/tasks/"+id, "Bearer "+tok, nil)
		if st := decodeJSON[map[string]any](t, r)["state"]; st != "succeeded" {
			return fmt.Errorf("task state = %v", st)
		}
		return nil
	})
}

// TestTasksCommand drives `scalelab tasks dlq` against a live server.
func TestTasksCommand(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	js, err := jetstream.New(testutil.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatal(err)
	}
	vars := env(map[string]string{"SCALELAB_NATS_URL": ns.ClientURL()})

	var out strings.Builder
	if err := run(t.Context(), []string{"tasks", "dlq", "ls"}, vars, &out, io.Discard); err != nil {
		t.Fatalf("tasks dlq ls = %v", err)
	}
	if got := strings.TrimSpace(out.String()); got != "no dead tasks" {
		t.Errorf("tasks dlq ls printed %q, want %q", got, "no dead tasks")
	}
	err = run(t.Context(), []string{"tasks", "dlq", "retry", "nosuchtask"}, vars, io.Discard, io.Discard)
	if !errors.Is(err, task.ErrNotFound) {
		t.Errorf("tasks dlq retry nosuchtask = %v, want not found", err)
	}
	for _, args := range [][]string{{"tasks"}, {"tasks", "dlq"}, {"tasks", "dlq", "retry", "a.b"}, {"tasks", "nope"}} {
		if err := run(t.Context(), args, vars, io.Discard, io.Discard); !errors.Is(err, ErrUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestTasksCommandCredentials: an operator command connects with
// --nats-user and SCALELAB_NATS_PASSWORD or --nats-password-file, to a
// server with the permission table on; bad combinations are usage errors
// reported before anything connects.
func TestTasksCommandCredentials(t *testing.T) {
	t.Parallel()
	ns, pw := natstest.Start(t)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", pw[natsconf.RoleAdmin]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(t.TempDir(), "nats-password")
	if err := os.WriteFile(pwFile, []byte(pw[natsconf.RoleAdmin]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls := []string{"tasks", "--nats", ns.ClientURL(), "dlq", "ls"}
	withFlags := func(flags ...string) []string { return append(append([]string{"tasks"}, flags...), ls[1:]...) }
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantUsage bool
		wantOK    bool
	}{
		{"user and password from env", ls, map[string]string{"SCALELAB_NATS_USER": "admin", "SCALELAB_NATS_PASSWORD": pw[natsconf.RoleAdmin]}, false, true},
		{"--nats-user and --nats-password-file", withFlags("--nats-user", "admin", "--nats-password-file", pwFile), nil, false, true},
		{"password file from env", ls, map[string]string{"SCALELAB_NATS_USER": "admin", "SCALELAB_NATS_PASSWORD_FILE": pwFile}, false, true},
		{"no credentials", ls, nil, false, false},
		{"wrong password", ls, map[string]string{"SCALELAB_NATS_USER": "admin", "SCALELAB_NATS_PASSWORD": pw[natsconf.RoleGateway]}, false, false},
		{"password and file", withFlags("--nats-user", "admin", "--nats-password-file", pwFile), map[string]string{"SCALELAB_NATS_PASSWORD": "x"}, true, false},
		{"user without password", withFlags("--nats-user", "admin"), nil, true, false},
		{"password without user", ls, map[string]string{"SCALELAB_NATS_PASSWORD": "x"}, true, false},
		{"missing password file", withFlags("--nats-user", "admin", "--nats-password-file", pwFile+".nope"), nil, true, false},
		{"user with a dot", withFlags("--nats-user", "ad.min", "--nats-password-file", pwFile), nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			err := run(t.Context(), tt.args, env(tt.env), &out, io.Discard)
			switch {
			case tt.wantOK && err != nil:
				t.Fatalf("run(%q) = %v, want nil", tt.args, err)
			case tt.wantOK && strings.TrimSpace(out.String()) != "no dead tasks":
				t.Errorf("run(%q) printed %q, want %q", tt.args, out.String(), "no dead tasks")
			case !tt.wantOK && err == nil:
				t.Errorf("run(%q) = nil, want an error", tt.args)
			case !tt.wantOK && errors.Is(err, ErrUsage) != tt.wantUsage:
				t.Errorf("run(%q) = %v, want a usage error: %v", tt.args, err, tt.wantUsage)
			}
		})
	}
}

// TestTasksProvision: `scalelab tasks provision` creates the task streams
// as admin, with the flags' sizes; the gateway's and the worker's NATS
// users cannot run it (issue #24: only the provisioner creates or updates
// a stream).
func TestTasksProvision(t *testing.T) {
	t.Parallel()
	ns, pw := natstest.Start(t)
	as := func(r natsconf.Role) func(string) string {
		return env(map[string]string{"SCALELAB_NATS_URL": ns.ClientURL(), "SCALELAB_NATS_USER": string(r), "SCALELAB_NATS_PASSWORD": pw[r]})
	}
	for _, r := range []natsconf.Role{natsconf.RoleGateway, natsconf.RoleWorker} {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		err := run(ctx, []string{"tasks", "provision", "--max-queue", "1"}, as(r), io.Discard, io.Discard)
		cancel()
		if err == nil {
			t.Errorf("tasks provision as %s = nil, want refused", r)
		}
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"tasks", "provision", "--max-queue", "500"}, as(natsconf.RoleAdmin), &out, io.Discard); err != nil {
		t.Fatalf("tasks provision as admin = %v", err)
	}
	if !strings.Contains(out.String(), "provisioned") {
		t.Errorf("tasks provision printed %q, want it to say what it provisioned", out.String())
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", pw[natsconf.RoleAdmin]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatalf("stream %s after tasks provision: %v", task.Stream, err)
	}
	if got := s.CachedInfo().Config.MaxMsgs; got != 500 {
		t.Errorf("stream %s MaxMsgs = %d, want 500 (--max-queue)", task.Stream, got)
	}
	if err := run(t.Context(), []string{"tasks", "provision", "--replicas", "0"}, as(natsconf.RoleAdmin), io.Discard, io.Discard); !errors.Is(err, ErrUsage) {
		t.Errorf("tasks provision --replicas 0 = %v, want a usage error", err)
	}
}
