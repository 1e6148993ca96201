package compose

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/natsconf"
)

// ErrNoEngine is returned by Find when this machine cannot run the stack:
// no docker command, no engine answering, or no compose. Tests skip on it.
var ErrNoEngine = errors.New("compose: no Docker engine with compose")

// Find returns the compose command this machine has (`docker compose` or
// `docker-compose`), or an error wrapping ErrNoEngine that says what is
// missing.
func Find(ctx context.Context) ([]string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, fmt.Errorf("%w: no docker command on PATH (the stack is compose.yaml on a Docker engine)", ErrNoEngine)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: the Docker engine is not reachable: %v: %s", ErrNoEngine, err, bytes.TrimSpace(out))
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil && exec.CommandContext(ctx, "docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, fmt.Errorf("%w: neither `docker compose` nor `docker-compose` works", ErrNoEngine)
}

// Options say which stack Start brings up.
type Options struct {
	// Command is the compose command, from Find.
	Command []string
	// Root is the repository: compose.yaml and scripts/images.sh.
	Root string
	// Prefix starts the project's name (letters and digits: compose v1
	// keeps only [a-z0-9] reliably); random hex follows.
	Prefix string
	// Gateways and Workers are the replicas started.
	Gateways, Workers int
	// Logf, if set, gets a line for each step and how long it took.
	Logf func(format string, args ...any)
}

// Stack is one running compose project and what a caller needs to talk to
// it. Its methods are safe for concurrent use.
type Stack struct {
	// Project is the compose project's name; Network its default network.
	Project, Network string
	// Base is the balancer, http://127.0.0.1:<port>; Admin its admin
	// listener; Monitor nats1's monitoring port.
	Base, Admin, Monitor string
	// Token has every scope, signed with the stack's secret.
	Token string
	// Client is an HTTP client with a timeout, for the calls above.
	Client *http.Client

	compose  []string // the compose command with -f and -p
	env      []string // the environment of every docker command
	gateways int
	workers  int
}

// Start builds the image (scripts/images.sh), starts a new project of
// compose.yaml on free loopback ports with secrets of its own, and waits
// until every container is healthy and both a task and GET /data go
// through the balancer. On an error the project is taken down again.
func Start(ctx context.Context, o Options) (st *Stack, err error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if _, err := os.Stat(filepath.Join(o.Root, "compose.yaml")); err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	secret := randomHex(32)
	keys := auth.KeysFromEnv(func(k string) string {
		if k == "SCALELAB_JWT_SECRET" {
			return secret
		}
		return ""
	})
	token, _, err := keys.Issue(o.Prefix, auth.AllScopes, 24*time.Hour, time.Now())
	if err != nil {
		return nil, fmt.Errorf("compose: issue token: %w", err)
	}
	project := o.Prefix + randomHex(4)
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	st = &Stack{
		Project: project,
		Network: project + "_default",
		// Set here, so that neither the caller's environment nor a .env
		// in the repository decides the ports, image or secret.
		env: append(os.Environ(),
			"SCALELAB_JWT_SECRET="+secret,
			"SCALELAB_IMAGE=scalelab:dev",
			"SCALELAB_PORT="+strconv.Itoa(ports[0]),
			"SCALELAB_ADMIN_PORT="+strconv.Itoa(ports[1]),
			"SCALELAB_NATS_MONITOR_PORT="+strconv.Itoa(ports[2]),
			"SCALELAB_LOG_LEVEL=info",
		),
		compose: append(slices.Clone(o.Command), "-f", filepath.Join(o.Root, "compose.yaml"), "-p", project),
		Base:    fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		Admin:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		Monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[2]),
		Token:   token,
		Client: &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
		},
		gateways: o.Gateways,
		workers:  o.Workers,
	}
	// A NATS password per role (natsconf/permissions.go), as images.sh
	// would write them to .env: letters and digits, starting with a letter.
	for _, r := range natsconf.Roles() {
		st.env = append(st.env, natsconf.PasswordEnv(r)+"=p"+randomHex(16))
	}
	st.env = append(st.env, natsconf.RoutePasswordEnv+"=p"+randomHex(16))

	start := time.Now()
	if out, err := st.Cmd(5*time.Minute, filepath.Join(o.Root, "scripts", "images.sh")); err != nil {
		return nil, fmt.Errorf("compose: scripts/images.sh: %w\n%s", err, out)
	}
	o.Logf("image built in %v", time.Since(start).Round(time.Millisecond))
	defer func() {
		if err != nil {
			err = errors.Join(err, fmt.Errorf("compose ps and logs:\n%s", st.Logs(40)), st.Down())
			st = nil
		}
	}()
	start = time.Now()
	if err := st.Scale(3*time.Minute, o.Gateways, o.Workers); err != nil {
		return st, err
	}
	if err := st.WaitHealthy(ctx, 3*time.Minute); err != nil {
		return st, err
	}
	err = Poll(ctx, 2*time.Minute, func() error {
		if _, err := st.RunTask(ctx, `{"task":"noop"}`); err != nil {
			return err
		}
		res, body, err := st.Get(ctx, "/data")
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /data = %d %s", res.StatusCode, body)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	o.Logf("stack %s up and serving in %v (balancer %s, nats1 monitoring %s)",
		project, time.Since(start).Round(time.Millisecond), st.Base, st.Monitor)
	return st, nil
}

// Scale runs `up -d` with these replica counts (no container recreated),
// and remembers them for WaitHealthy.
func (st *Stack) Scale(limit time.Duration, gateways, workers int) error {
	if _, err := st.Compose(limit, "up", "-d", "--no-recreate",
		"--scale", fmt.Sprintf("gateway=%d", gateways), "--scale", fmt.Sprintf("worker=%d", workers)); err != nil {
		return err
	}
	st.gateways, st.workers = gateways, workers
	return nil
}

// Down takes the project down with its volumes and checks that nothing of
// it is left: no container, volume or network.
func (st *Stack) Down() error {
	if _, err := st.Compose(3*time.Minute, "down", "-v", "--remove-orphans"); err != nil {
		return err
	}
	label := "label=com.docker.compose.project=" + st.Project
	var errs []error
	for _, q := range [][]string{
		{"ps", "-aq", "--filter", label},
		{"volume", "ls", "-q", "--filter", label},
		{"volume", "ls", "-q", "--filter", "name=" + st.Project + "_"},
		{"network", "ls", "-q", "--filter", label},
		{"network", "ls", "-q", "--filter", "name=" + st.Project + "_"},
	} {
		out, err := st.Cmd(time.Minute, "docker", q...)
		if err != nil {
			errs = append(errs, fmt.Errorf("docker %s: %w\n%s", strings.Join(q, " "), err, out))
			continue
		}
		if s := strings.TrimSpace(out); s != "" {
			errs = append(errs, fmt.Errorf("after down -v, docker %s lists %q, want nothing", strings.Join(q, " "), s))
		}
	}
	return errors.Join(errs...)
}

// Logs returns `compose ps` and the last lines of every container's log.
func (st *Stack) Logs(tail int) string {
	ps, _ := st.Compose(time.Minute, "ps")
	logs, _ := st.Compose(time.Minute, "logs", "--no-color", "--tail", strconv.Itoa(tail))
	return "compose ps:\n" + ps + "\ncompose logs (tail):\n" + logs
}

// Container is one running container of the project.
type Container struct {
	ID, Hostname, IP string
}

// ServedBy is a gateway's X-Served-By: its default id, hostname:port.
func (c Container) ServedBy() string { return c.Hostname + ":5000" }

// URL is a gateway's URL as the balancer discovers it.
func (c Container) URL() string { return "http://" + net.JoinHostPort(c.IP, "5000") }

// Containers lists the running containers of a service, by hostname, by
// compose's labels (which compose v1 and v2 both set, unlike their names).
func (st *Stack) Containers(service string) ([]Container, error) {
	out, err := st.Cmd(time.Minute, "docker", "ps", "-q",
		"--filter", "label=com.docker.compose.project="+st.Project,
		"--filter", "label=com.docker.compose.service="+service)
	if err != nil {
		return nil, fmt.Errorf("docker ps: %w\n%s", err, out)
	}
	ids := strings.Fields(out)
	if len(ids) == 0 {
		return nil, nil
	}
	out, err = st.Cmd(time.Minute, "docker", append([]string{"inspect", "--format",
		"{{.Id}} {{.Config.Hostname}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"}, ids...)...)
	if err != nil {
		return nil, fmt.Errorf("docker inspect: %w\n%s", err, out)
	}
	var cs []Container
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch len(f) {
		case 3:
			cs = append(cs, Container{ID: f[0], Hostname: f[1], IP: f[2]})
		case 2: // on no network: disconnected
			cs = append(cs, Container{ID: f[0], Hostname: f[1]})
		default:
			return nil, fmt.Errorf("docker inspect line %q: want id, hostname and address", line)
		}
	}
	slices.SortFunc(cs, func(a, b Container) int { return strings.Compare(a.Hostname, b.Hostname) })
	return cs, nil
}

// Health returns a container's health status (healthy, starting,
// unhealthy), "exited <code>", or its state when it has no health check or
// is not running.
func (st *Stack) Health(id string) (string, error) {
	out, err := st.Cmd(time.Minute, "docker", "inspect", "--format",
		"{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
	if err != nil {
		return "", fmt.Errorf("docker inspect %s: %w\n%s", id, err, out)
	}
	f := strings.Fields(out)
	if len(f) == 2 && f[0] == "running" {
		return f[1], nil
	}
	if len(f) == 1 && f[0] == "exited" {
		code, err := st.Cmd(time.Minute, "docker", "inspect", "--format", "{{.State.ExitCode}}", id)
		if err != nil {
			return "", fmt.Errorf("docker inspect %s: %w\n%s", id, err, code)
		}
		return "exited " + strings.TrimSpace(code), nil
	}
	return strings.TrimSpace(out), nil
}

// Service returns the compose service of container id.
func (st *Stack) Service(id string) (string, error) {
	out, err := st.Cmd(time.Minute, "docker", "inspect", "--format", `{{index .Config.Labels "com.docker.compose.service"}}`, id)
	if err != nil {
		return "", fmt.Errorf("docker inspect %s: %w\n%s", id, err, out)
	}
	return strings.TrimSpace(out), nil
}

// WaitHealthy waits until every container of the project runs and passes
// its health check, and the one-shot provision step has exited 0.
func (st *Stack) WaitHealthy(ctx context.Context, limit time.Duration) error {
	return Poll(ctx, limit, func() error {
		out, err := st.Cmd(time.Minute, "docker", "ps", "-aq", "--filter", "label=com.docker.compose.project="+st.Project)
		if err != nil {
			return fmt.Errorf("docker ps: %w: %s", err, out)
		}
		ids := strings.Fields(out)
		// The nodes, dbsvc, cachesvc, the balancer, the replicas, and the
		// one-shot provision step, which must have exited 0.
		if want := 3 + 3 + st.gateways + st.workers + 1; len(ids) != want {
			return fmt.Errorf("%d containers, want %d", len(ids), want)
		}
		for _, id := range ids {
			svc, err := st.Service(id)
			if err != nil {
				return err
			}
			h, err := st.Health(id)
			if err != nil {
				return err
			}
			if svc == "provision" {
				if h != "exited 0" {
					return fmt.Errorf("provision container %.12s is %s, want exited 0", id, h)
				}
				continue
			}
			if h != "healthy" {
				return fmt.Errorf("%s container %.12s is %s", svc, id, h)
			}
		}
		return nil
	})
}

// Docker runs a docker command that must succeed.
func (st *Stack) Docker(limit time.Duration, args ...string) error {
	if out, err := st.Cmd(limit, "docker", args...); err != nil {
		return fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace([]byte(out)))
	}
	return nil
}

// Compose runs a compose command on the project and returns its output.
func (st *Stack) Compose(limit time.Duration, args ...string) (string, error) {
	out, err := st.Cmd(limit, st.compose[0], append(slices.Clone(st.compose[1:]), args...)...)
	if err != nil {
		return out, fmt.Errorf("compose %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Cmd runs a command with the stack's environment and returns its
// combined output. It has its own deadline, not a caller's context, so
// that a cancelled run can still take the stack down.
func (st *Stack) Cmd(limit time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = st.env
	out, err := c.CombinedOutput()
	return string(out), err
}

// Poll calls check until it returns nil, or returns its last error once
// limit has passed or ctx is done. It polls; it never sleeps in the hope
// that something has finished.
func Poll(ctx context.Context, limit time.Duration, check func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not met after %v: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("compose: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// randomHex returns n random bytes in hex; crypto/rand does not fail.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
