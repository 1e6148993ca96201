package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/cachesvc"
	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/gateway"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/worker"
)

// upConfig is the configuration of `scalelab up`.
type upConfig struct {
	DataDir        string
	BalancerAddr   string
	GatewayAddrs   string
	DBAddr         string
	CacheAddr      string
	Workers        int
	Concurrency    int
	Gateways       int
	Policy         string
	MaxQueue       int64
	NATSHost       string
	NATSPort       int
	NATSHTTPPort   int
	ReportDuration time.Duration
	SeedRows       int
	ShutdownTime   time.Duration
	DevTokenTTL    time.Duration
	// Cache is every gateway's cache config (--cache off|kv|kv+local, ...).
	Cache cache.Config
	// Limits are every gateway's rate limits.
	Limits gateway.RateLimits
}

func (c *upConfig) register(s *envflag.Set) {
	s.String(&c.DataDir, "data", "SCALELAB_DATA", "./data", "directory of the JetStream store and the SQLite database")
	s.String(&c.BalancerAddr, "addr", "SCALELAB_ADDR", "127.0.0.1:8000", "balancer address (the front door)")
	s.String(&c.GatewayAddrs, "gateway-addrs", "SCALELAB_GATEWAY_ADDRS", "127.0.0.1:5000,127.0.0.1:5003", "comma-separated gateway addresses: one gateway each")
	s.String(&c.DBAddr, "dbsvc-addr", "SCALELAB_DBSVC_ADDR", "127.0.0.1:5002", "dbsvc HTTP address")
	s.String(&c.CacheAddr, "cachesvc-addr", "SCALELAB_CACHESVC_ADDR", "127.0.0.1:5004", "cachesvc HTTP address")
	s.Int(&c.Workers, "workers", "SCALELAB_WORKERS", 2, "number of workers")
	s.Int(&c.Gateways, "gateways", "SCALELAB_GATEWAYS", 0, "number of gateways: the --gateway-addrs, then any free port for the rest (0: one per --gateway-addrs)")
	s.String(&c.Policy, "policy", "SCALELAB_POLICY", balancer.PolicyRoundRobin, "balancer policy: round_robin, weighted_round_robin, least_connections, p2c")
	s.Int64(&c.MaxQueue, "max-queue", "SCALELAB_MAX_QUEUE", 0, "most tasks queued at once; past it POST /longtask answers 429 (0: no limit)")
	s.Int(&c.Concurrency, "worker-concurrency", "SCALELAB_CONCURRENCY", worker.DefaultConfig().Concurrency, "tasks each worker runs at once")
	s.String(&c.NATSHost, "nats-host", "SCALELAB_NATS_HOST", "127.0.0.1", "embedded NATS listen host")
	s.Int(&c.NATSPort, "nats-port", "SCALELAB_NATS_PORT", 4222, "embedded NATS client port (-1: any free port)")
	s.Int(&c.NATSHTTPPort, "nats-http-port", "SCALELAB_NATS_HTTP_PORT", 8222, "embedded NATS monitoring port (0: off, -1: any free port)")
	s.Duration(&c.ReportDuration, "report-duration", "SCALELAB_REPORT_DURATION", worker.DefaultConfig().ReportDuration, "how long the report task works")
	s.Int(&c.SeedRows, "seed-rows", "SCALELAB_SEED_ROWS", dbsvc.DefaultConfig().SeedRows, "rows seeded for the expensive /data query (first start only)")
	s.Duration(&c.ShutdownTime, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", 10*time.Second, "grace period for in-flight requests and tasks on Ctrl-C")
	s.Duration(&c.DevTokenTTL, "token-ttl", "SCALELAB_TOKEN_TTL", 24*time.Hour, "lifetime of the printed dev token")
	c.Cache = cache.DefaultConfig()
	c.Cache.RegisterFlags(s)
	c.Limits = gateway.DefaultRateLimits()
	c.Limits.RegisterFlags(s)
}

func (c *upConfig) gatewayAddrs() []string {
	var out []string
	for _, a := range strings.Split(c.GatewayAddrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if c.Gateways > 0 {
		if len(out) > c.Gateways {
			out = out[:c.Gateways]
		}
		for len(out) < c.Gateways {
			out = append(out, "127.0.0.1:0")
		}
	}
	return out
}

func (c *upConfig) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("up: --data must not be empty"))
	}
	if len(c.gatewayAddrs()) == 0 {
		errs = append(errs, errors.New("up: --gateway-addrs needs at least one address"))
	}
	if c.Gateways < 0 || c.Gateways > 64 {
		errs = append(errs, fmt.Errorf("up: --gateways must be 0..64, got %d", c.Gateways))
	}
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, fmt.Errorf("up: --workers must be 1..64, got %d", c.Workers))
	}
	if c.NATSPort < -1 || c.NATSPort > 65535 || c.NATSPort == 0 {
		errs = append(errs, fmt.Errorf("up: --nats-port must be a port or -1, got %d", c.NATSPort))
	}
	if c.NATSHTTPPort < -1 || c.NATSHTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("up: --nats-http-port must be a port, 0 or -1, got %d", c.NATSHTTPPort))
	}
	if c.DevTokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("up: --token-ttl must be positive, got %v", c.DevTokenTTL))
	}
	return errors.Join(errs...)
}

// upRole is one role instance inside `up`.
type upRole struct {
	name  string        // also the NATS connection name
	user  natsconf.Role // the NATS user it connects as
	start startFunc
}

// runUp runs every role in one process over an embedded NATS server.
func runUp(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scalelab up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	s := envflag.New(fs, getenv)
	var c common
	c.register(s, false)
	var cfg upConfig
	cfg.register(s)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("up: unexpected arguments %q", fs.Args()))
	}
	log, err := c.logger(stderr)
	if err != nil {
		return usageErr(err)
	}
	if err := errors.Join(s.Err(), cfg.validate()); err != nil {
		return usageErr(err)
	}

	// Dev mode: a random secret unless one is given, so no token signed
	// with a well-known key ever works against a fresh `up`.
	keys := auth.KeysFromEnv(getenv)
	generated := len(keys.Secret) == 0
	if generated {
		secret, err := auth.RandomSecret()
		if err != nil {
			return err
		}
		keys.Secret = []byte(secret)
	}
	if err := keys.Validate(); err != nil {
		return usageErr(fmt.Errorf("up: %w", err))
	}

	// Bind every port before starting anything, so a busy port fails
	// fast with its address, and the balancer learns the gateways' real
	// addresses (tests pass :0).
	lns, err := listenAll(append([]string{cfg.BalancerAddr, cfg.DBAddr, cfg.CacheAddr}, cfg.gatewayAddrs()...))
	if err != nil {
		return err
	}
	balLn, dbLn, cacheLn, gwLns := lns[0], lns[1], lns[2], lns[3:]

	// The same permission model as a cluster (natsconf/permissions.go):
	// each role connects as its own user, with passwords made for this
	// run, so nothing that works here needs more rights in production.
	passwords, err := natsconf.RandomPasswords()
	if err != nil {
		closeAll(lns)
		return err
	}
	ns, err := natsconf.StartEmbedded(natsconf.Embedded{
		Host: cfg.NATSHost, Port: cfg.NATSPort, HTTPPort: cfg.NATSHTTPPort,
		StoreDir: filepath.Join(cfg.DataDir, "nats"), Passwords: passwords,
	}, log)
	if err != nil {
		closeAll(lns)
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		log.Info("embedded nats stopped")
	}()

	// Provision the task streams once, before the roles start: each gateway
	// and worker provisions too, and would otherwise all create them at
	// the same moment.
	provision := task.DefaultProvisionConfig()
	provision.MaxQueueMsgs = cfg.MaxQueue
	// up's own connection, as the operator: provisioning now, readiness
	// checks later.
	admin := string(natsconf.RoleAdmin)
	upNC, err := nats.Connect(ns.ClientURL(), nats.Name("scalelab-up"),
		nats.UserInfo(admin, passwords[natsconf.RoleAdmin]), nats.CustomInboxPrefix(natsconn.InboxPrefix(admin)))
	if err != nil {
		closeAll(lns)
		return fmt.Errorf("up: connect to embedded nats: %w", err)
	}
	defer upNC.Close()
	natsContext, err := writeNATSContext(cfg.DataDir, ns.ClientURL(), admin, passwords[natsconf.RoleAdmin])
	if err != nil {
		closeAll(lns)
		return err
	}
	if err := provisionTasks(ctx, upNC, provision); err != nil {
		closeAll(lns)
		return err
	}

	var upRoles []upRole
	var cfgErrs []error
	dbCfg := dbsvc.DefaultConfig()
	dbCfg.Listener, dbCfg.DataDir, dbCfg.SeedRows, dbCfg.ShutdownTimeout = dbLn, cfg.DataDir, cfg.SeedRows, cfg.ShutdownTime
	cacheCfg := cachesvc.DefaultConfig()
	cacheCfg.Listener, cacheCfg.ShutdownTimeout = cacheLn, cfg.ShutdownTime
	upRoles = append(upRoles,
		upRole{"dbsvc", natsconf.RoleDBSvc, func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return dbsvc.Run(ctx, dbCfg, nc, log)
		}},
		upRole{"cachesvc", natsconf.RoleCacheSvc, func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return cachesvc.Run(ctx, cacheCfg, nc, log)
		}},
	)
	for i := range cfg.Workers {
		wCfg := worker.DefaultConfig()
		wCfg.ID = defaultID("") + fmt.Sprintf("/worker-%d", i+1)
		wCfg.ReportDuration, wCfg.ShutdownTimeout, wCfg.Concurrency = cfg.ReportDuration, cfg.ShutdownTime, cfg.Concurrency
		wCfg.Provision.MaxQueueMsgs = cfg.MaxQueue
		cfgErrs = append(cfgErrs, wCfg.Validate())
		upRoles = append(upRoles, upRole{fmt.Sprintf("worker-%d", i+1), natsconf.RoleWorker, func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return worker.Run(ctx, wCfg, nc, log)
		}})
	}
	var backends []string
	for i, ln := range gwLns {
		gwCfg := gateway.DefaultConfig()
		gwCfg.Listener, gwCfg.JWT, gwCfg.ShutdownTimeout = ln, keys, cfg.ShutdownTime
		gwCfg.ID = defaultID(ln.Addr().String())
		gwCfg.Provision.MaxQueueMsgs = cfg.MaxQueue
		gwCfg.Cache, gwCfg.Limits = cfg.Cache, cfg.Limits
		cfgErrs = append(cfgErrs, gwCfg.Validate())
		backends = append(backends, "http://"+ln.Addr().String())
		upRoles = append(upRoles, upRole{fmt.Sprintf("gateway-%d", i+1), natsconf.RoleGateway, func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return gateway.Run(ctx, gwCfg, nc, log)
		}})
	}
	balCfg := balancer.DefaultConfig()
	balCfg.Listener, balCfg.ShutdownTimeout = balLn, cfg.ShutdownTime
	balCfg.Backends, balCfg.Policy = backends, cfg.Policy
	if err := errors.Join(append(cfgErrs, dbCfg.Validate(), cacheCfg.Validate(), balCfg.Validate())...); err != nil {
		closeAll(lns)
		return usageErr(err)
	}

	// cancel stops the roles already started if a later one cannot start.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return balancer.Run(gctx, balCfg, log) })
	for _, r := range upRoles {
		// Each role has its own connection, as it would as a process: its
		// name shows in `nats server report connections`, and draining one
		// does not cut the others off.
		nc, err := natsconn.Connect(gctx, natsconn.Options{URL: ns.ClientURL(), Name: "scalelab-" + r.name,
			User: string(r.user), Password: passwords[r.user]}, log)
		if err != nil {
			cancel()
			return errors.Join(err, g.Wait())
		}
		g.Go(func() error {
			err := r.start(gctx, nc, log)
			if derr := natsconn.Close(nc, drainTimeout); derr != nil {
				log.Warn("nats drain", "conn", r.name, "err", derr)
			}
			return err
		})
	}

	// Say "up" only when it is: every HTTP role answers /readyz and a
	// worker answers the process service (dbsvc seeds on first start).
	readyURLs := []string{"http://" + balLn.Addr().String() + "/-/readyz",
		"http://" + dbLn.Addr().String() + "/readyz", "http://" + cacheLn.Addr().String() + "/readyz"}
	for _, b := range backends {
		readyURLs = append(readyURLs, b+"/readyz")
	}
	if err := waitReady(gctx, upNC, readyURLs, log); err != nil {
		cancel()
		return errors.Join(err, g.Wait())
	}
	if gctx.Err() != nil {
		return g.Wait() // stopped (or failed) before it was up
	}

	token, exp, err := keys.Issue("dev", auth.AllScopes, cfg.DevTokenTTL, time.Now())
	if err != nil {
		cancel()
		return errors.Join(err, g.Wait())
	}
	printBanner(stdout, bannerInfo{
		Balancer: "http://" + balLn.Addr().String(), Gateways: backends,
		DB: "http://" + dbLn.Addr().String(), Cache: "http://" + cacheLn.Addr().String(),
		NATS: ns.ClientURL(), Workers: cfg.Workers, DataDir: cfg.DataDir,
		Token: token, Expires: exp, GeneratedSecret: generated,
		NATSContext: natsContext, NATSUser: admin, NATSPassword: passwords[natsconf.RoleAdmin],
	})
	err = g.Wait()
	log.Info("scalelab stopped")
	return err
}

// provisionTasks creates the task streams and bucket.
func provisionTasks(ctx context.Context, nc *nats.Conn, cfg task.ProvisionConfig) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("up: provision tasks: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := task.Provision(ctx, js, cfg); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// natsContextFile is the nats CLI context `up` writes under --data.
const natsContextFile = "nats-context.json"

// writeNATSContext writes a nats CLI context for user (the operator) to
// dataDir and returns its absolute path: natscli takes a path ending in
// .json as --context or NATS_CONTEXT. The file holds the password, so
// only its owner may read it; each run overwrites it with the run's
// password.
func writeNATSContext(dataDir, url, user, password string) (string, error) {
	path, err := filepath.Abs(filepath.Join(dataDir, natsContextFile))
	if err != nil {
		return "", fmt.Errorf("up: nats context: %w", err)
	}
	b, err := json.MarshalIndent(map[string]string{
		"description": "scalelab up: the operator (admin) on the embedded server",
		"url":         url, "user": user, "password": password,
	}, "", "  ")
	if err != nil {
		return "", fmt.Errorf("up: nats context: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("up: nats context: %w", err)
	}
	// Chmod too: a file left by an older run keeps its mode on open.
	_, werr := f.Write(append(b, '\n'))
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		return "", fmt.Errorf("up: write nats context %s: %w", path, err)
	}
	return path, nil
}

// readyTimeout bounds the wait for every role to be ready; the first start
// seeds the database, which takes a few seconds on a slow machine.
const readyTimeout = 2 * time.Minute

// waitReady polls until every URL answers 200 and the process service
// answers a ping. It returns early, with no error, when ctx ends (Ctrl-C
// or a role failed: the caller's errgroup has the reason).
func waitReady(ctx context.Context, nc *nats.Conn, urls []string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	ready := func(url string) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		res, err := hc.Do(req)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}
	pending := urls
	for {
		var still []string
		for _, u := range pending {
			if !ready(u) {
				still = append(still, u)
			}
		}
		pending = still
		_, perr := nc.Request("$SRV.PING."+worker.ProcessService, nil, time.Second)
		if len(pending) == 0 && perr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("up: not ready after %v: waiting for %v (process service: %v)", readyTimeout, pending, perr)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
		}
		log.Debug("waiting for roles to be ready", "pending", pending)
	}
}

// listenAll binds every address, or none: on an error it closes what it
// bound and names the address that failed.
func listenAll(addrs []string) ([]net.Listener, error) {
	lns := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("up: listen on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// bannerInfo is what `up` tells the person who started it.
type bannerInfo struct {
	Balancer, DB, Cache, NATS string
	Gateways                  []string
	Workers                   int
	DataDir                   string
	Token                     string
	Expires                   time.Time
	GeneratedSecret           bool
	// NATSContext is the nats CLI context file of the operator user
	// NATSUser, whose password is NATSPassword.
	NATSContext, NATSUser, NATSPassword string
}

func printBanner(w io.Writer, b bannerInfo) {
	secretNote := "signed with SCALELAB_JWT_SECRET"
	if b.GeneratedSecret {
		secretNote = "signed with a random secret made for this run; set SCALELAB_JWT_SECRET (32+ bytes) to keep tokens across restarts"
	}
	usersNATS := ""
	if b.NATS != nats.DefaultURL {
		usersNATS = " --nats " + b.NATS
	}
	fmt.Fprintf(w, `
scalelab is up
  balancer  %s   (the front door)
  gateways  %s
  workers   %d
  dbsvc     %s/db
  cachesvc  %s/cache
  nats      %s   (data in %s)

Dev token (sub "dev", all scopes, expires %s; %s):
export TOKEN=%s

NATS wants a user per role (passwords made for this run); operators are %q.
For the nats CLI (context %s) and scalelab tasks/users:
export NATS_CONTEXT=%s SCALELAB_NATS_USER=%s SCALELAB_NATS_PASSWORD=%s

With both exports, each line works as printed:
curl -si -H 'Authorization: Bearer %s' %s/data
curl -si -H 'Authorization: Bearer %s' %s/process
curl -si -X POST -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"task":"report"}' %s/longtask
echo 'choose a long password' | go run . users add alice%s && curl -s -X POST -d '{"username":"alice","password":"choose a long password"}' %s/auth/token

Inspect the bus:
go tool nats stream ls
go tool nats consumer info TASKS workers
go tool nats micro ls

Ctrl-C drains and stops everything.
`, b.Balancer, strings.Join(b.Gateways, ", "), b.Workers, b.DB, b.Cache, b.NATS, b.DataDir,
		b.Expires.UTC().Format(time.RFC3339), secretNote, b.Token,
		b.NATSUser, b.NATSContext, b.NATSContext, b.NATSUser, b.NATSPassword,
		b.Token, b.Balancer, b.Token, b.Balancer, b.Token, b.Balancer, usersNATS, b.Balancer)
}
