package platform

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/cachesvc"
	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/gateway"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/certs"
	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/platform/dashboard"
	"github.com/scalelab/scalelab/worker"
)

// DefaultStoreReserve is --store-reserve: 256 MiB of the disk kept free by
// JetStream, for what its message bytes do not count (indexes, deleted
// messages not yet compacted), for the writes of one guard interval and
// for the SQLite file next to it, which then fills the disk alone and
// answers its own 503 store_full (dbsvc).
const DefaultStoreReserve = 256 << 20

// DrainTimeout bounds the final drain of a role's NATS connection.
const DrainTimeout = 10 * time.Second

// ReadyTimeout bounds the wait for every role to be ready; the first start
// seeds the database, which takes a few seconds on a slow machine.
const ReadyTimeout = 2 * time.Minute

// NATSContextFile is the nats CLI context Start writes under the data
// directory.
const NATSContextFile = "nats-context.json"

// Config is the configuration of a platform (the flags of `scalelab up`).
type Config struct {
	DataDir        string
	BalancerAddr   string
	AdminAddr      string
	GatewayAddrs   string
	DBAddr         string
	CacheAddr      string
	Workers        int
	Concurrency    int
	Gateways       int
	Policy         string
	MaxQueue       int64
	MaxTaskBytes   int64
	NATSHost       string
	NATSPort       int
	NATSHTTPPort   int
	ReportDuration time.Duration
	SeedRows       int
	ShutdownTime   time.Duration
	// StoreReserve is the free space, in bytes, the embedded JetStream
	// leaves on its disk (natsconf.GuardStore); 0 turns the guard off
	// (the server's own limit: 75 % of the free space at start).
	StoreReserve int64
	// MaxDBBytes is dbsvc's --max-db-bytes: the database file's cap (0:
	// the disk's).
	MaxDBBytes int64
	// GuardInterval is how often the guard looks at the disk (0:
	// natsconf.DefaultGuardInterval). Not a flag: tests shorten it.
	GuardInterval time.Duration
	// TLS serves HTTPS too, on TLSAddr, with a self-signed certificate for
	// 127.0.0.1 and localhost kept in the data directory (tlsDir), so that
	// a client told to trust it once goes on trusting it.
	TLS     bool
	TLSAddr string
	// Cache is every gateway's cache config (--cache off|kv|kv+local, ...).
	Cache cache.Config
	// Limits are every gateway's rate limits.
	Limits gateway.RateLimits

	// Keys sign and check tokens; Start refuses keys that do not validate.
	// Not a flag: the secret comes from the environment or is made for
	// the run (see `scalelab up`).
	Keys auth.Keys
	// BcryptSlots is every gateway's gateway.Config.BcryptSlots: what
	// ReserveLoopProcs answered, or 0 for the gateways' default. Not a
	// flag.
	BcryptSlots int
	// GatewayIDs name the gateways, in order (X-Served-By, metrics);
	// gateways past its end, or with "", get DefaultID of their address.
	// Not a flag: `scalelab bench` names them gw1, gw2, ...
	GatewayIDs []string
	// GatewayLatency is each gateway's gateway.Config.InjectLatency, in
	// order; gateways past its end get none. Not a flag: `scalelab bench`
	// makes one gateway slow with it.
	GatewayLatency []time.Duration
	// Weights are the balancer's weights of the gateways, in order
	// (balancer.Config.Weights, for the weighted round robin policy).
	// Not a flag.
	Weights []int
	// HealthInterval is the balancer's balancer.Config.HealthInterval (0:
	// its default). Not a flag: `scalelab bench` lengthens it to show
	// passive ejection alone.
	HealthInterval time.Duration
}

// DefaultConfig returns the defaults of the flags, with no keys.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(envflag.New(flag.NewFlagSet("defaults", flag.ContinueOnError), nil))
	return c
}

// RegisterFlags defines the platform's flags on s.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.DataDir, "data", "SCALELAB_DATA", "./data", "directory of the JetStream store and the SQLite database")
	s.String(&c.BalancerAddr, "addr", "SCALELAB_ADDR", "127.0.0.1:8000", "balancer address (the front door)")
	s.String(&c.AdminAddr, "admin-addr", "SCALELAB_ADMIN_ADDR", "127.0.0.1:8001", "balancer admin listener address: /-/ state, metrics, dashboard, drain (keep it on loopback)")
	s.String(&c.GatewayAddrs, "gateway-addrs", "SCALELAB_GATEWAY_ADDRS", "127.0.0.1:5000,127.0.0.1:5003", "comma-separated gateway addresses: one gateway each")
	s.String(&c.DBAddr, "dbsvc-addr", "SCALELAB_DBSVC_ADDR", "127.0.0.1:5002", "dbsvc HTTP address")
	s.String(&c.CacheAddr, "cachesvc-addr", "SCALELAB_CACHESVC_ADDR", "127.0.0.1:5004", "cachesvc HTTP address")
	s.Int(&c.Workers, "workers", "SCALELAB_WORKERS", 2, "number of workers")
	s.Int(&c.Gateways, "gateways", "SCALELAB_GATEWAYS", 0, "number of gateways: the --gateway-addrs, then any free port for the rest (0: one per --gateway-addrs)")
	s.String(&c.Policy, "policy", "SCALELAB_POLICY", balancer.PolicyRoundRobin, "balancer policy: round_robin, weighted_round_robin, least_connections, p2c")
	s.Int64(&c.MaxQueue, "max-queue", "SCALELAB_MAX_QUEUE", 0, "most tasks queued at once; past it POST /longtask answers 429 (0: no limit)")
	s.Int64(&c.MaxTaskBytes, "max-task-bytes", "SCALELAB_MAX_TASK_BYTES", task.DefaultProvisionConfig().MaxRecordBytes, "most bytes of task records kept; past half of it POST /longtask answers 503 store_full")
	s.Int64(&c.StoreReserve, "store-reserve", "SCALELAB_STORE_RESERVE", DefaultStoreReserve, "bytes of the data directory's disk that JetStream leaves free: past it task submissions answer 503 store_full until space returns (0: no guard)")
	s.Int64(&c.MaxDBBytes, "max-db-bytes", "SCALELAB_MAX_DB_BYTES", 0, "most bytes of the SQLite database file; past it item writes answer 503 store_full and reads go on (0: no cap but the disk's)")
	s.Int(&c.Concurrency, "worker-concurrency", "SCALELAB_CONCURRENCY", worker.DefaultConfig().Concurrency, "tasks each worker runs at once")
	s.String(&c.NATSHost, "nats-host", "SCALELAB_NATS_HOST", "127.0.0.1", "embedded NATS listen host")
	s.Int(&c.NATSPort, "nats-port", "SCALELAB_NATS_PORT", 4222, "embedded NATS client port (-1: any free port)")
	s.Int(&c.NATSHTTPPort, "nats-http-port", "SCALELAB_NATS_HTTP_PORT", 8222, "embedded NATS monitoring port (0: off, -1: any free port)")
	s.Duration(&c.ReportDuration, "report-duration", "SCALELAB_REPORT_DURATION", worker.DefaultConfig().ReportDuration, "how long the report task works")
	s.Int(&c.SeedRows, "seed-rows", "SCALELAB_SEED_ROWS", dbsvc.DefaultConfig().SeedRows, "rows seeded for the expensive /data query (first start only)")
	s.Bool(&c.TLS, "tls", "SCALELAB_TLS", false, "also serve HTTPS on --tls-addr, with a self-signed certificate for 127.0.0.1 and localhost (made once, kept in --data)")
	s.String(&c.TLSAddr, "tls-addr", "SCALELAB_TLS_ADDR", "127.0.0.1:8443", "balancer HTTPS address, with --tls")
	s.Duration(&c.ShutdownTime, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", 10*time.Second, "grace period for in-flight requests and tasks on Ctrl-C")
	c.Cache = cache.DefaultConfig()
	c.Cache.RegisterFlags(s)
	c.Limits = gateway.DefaultRateLimits()
	c.Limits.RegisterFlags(s)
}

// gatewayAddrs lists the address of each gateway.
func (c *Config) gatewayAddrs() []string {
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

// Validate reports every bad setting at once (the keys are checked by
// Start, which a caller may give keys after parsing flags).
func (c *Config) Validate() error {
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
	if c.StoreReserve < 0 {
		errs = append(errs, fmt.Errorf("up: --store-reserve must not be negative, got %d", c.StoreReserve))
	}
	return errors.Join(errs...)
}

// tlsDir is the directory under the data directory of `up --tls`'s
// self-signed certificate and key.
const tlsDir = "tls"

// ErrConfig wraps the errors of a bad Config, so `up` can answer them as
// usage errors.
var ErrConfig = errors.New("bad configuration")

// Platform is a running platform: every URL a client or operator needs,
// and the means to stop it, or one of its gateways.
type Platform struct {
	// BalancerURL is the front door, e.g. http://127.0.0.1:8000.
	BalancerURL string
	// HTTPSURL is the front door's HTTPS, e.g. https://127.0.0.1:8443, and
	// TLSCert the self-signed certificate it shows (PEM), to trust; both
	// "" without Config.TLS.
	HTTPSURL, TLSCert string
	// AdminURL is the balancer's admin listener, e.g.
	// http://127.0.0.1:8001: its /-/ routes and the dashboard.
	AdminURL string
	// GatewayURLs are the gateways' URLs, in the balancer's order.
	GatewayURLs []string
	// DBURL and CacheURL are dbsvc's and cachesvc's HTTP URLs.
	DBURL, CacheURL string
	// NATSURL is the embedded server's client URL.
	NATSURL string
	// NATSMonitorURL is the embedded server's monitoring URL (/varz,
	// /connz, /jsz), or "" when Config.NATSHTTPPort is 0.
	NATSMonitorURL string
	// NATSContext is the nats CLI context file of the operator (user
	// natsconf.RoleAdmin, password Passwords[natsconf.RoleAdmin]).
	NATSContext string
	// Passwords are the NATS passwords of every role, made for this run.
	Passwords map[natsconf.Role]string
	// Admin is the platform's own connection, as the operator. It stays
	// open until the platform stops.
	Admin *nats.Conn

	log     *slog.Logger
	lns     []net.Listener // every listener, closed by teardown
	ns      *server.Server // the embedded NATS server
	cancel  context.CancelFunc
	indexNC *nats.Conn      // the gateways' shared task index's (gateway.StartTaskIndex)
	stopped <-chan struct{} // closed when the platform must stop: ctx ended, Stop, or a role failed
	roles   errgroup.Group  // the running roles
	gwStop  []context.CancelFunc
	gwDone  []chan struct{}
	gwKill  []*killableListener
	once    sync.Once // teardown runs once; err is its result
	err     error
}

// role is one role instance of the platform.
type role struct {
	name  string        // also the NATS connection name
	user  natsconf.Role // the NATS user it connects as
	done  chan struct{}
	start func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error
}

// Start starts the platform and returns once every role is ready. It runs
// until ctx ends, Stop is called or a role fails; Wait returns how it
// ended. When a role fails to start, Start stops the others and returns
// the error. Whatever way it ends, one function takes it down (teardown).
func Start(ctx context.Context, cfg Config, log *slog.Logger) (_ *Platform, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := cfg.Keys.Validate(); err != nil {
		return nil, fmt.Errorf("%w: up: %w", ErrConfig, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Platform{log: log, cancel: cancel, stopped: ctx.Done()}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.teardown())
		}
	}()

	// Bind every port before starting anything, so a busy port fails
	// fast with its address, and the balancer learns the gateways' real
	// addresses (tests pass :0).
	addrs := append([]string{cfg.BalancerAddr, cfg.AdminAddr, cfg.DBAddr, cfg.CacheAddr}, cfg.gatewayAddrs()...)
	if cfg.TLS {
		addrs = append(addrs, cfg.TLSAddr)
	}
	if p.lns, err = listenAll(addrs); err != nil {
		return nil, err
	}
	balLn, adminLn, dbLn, cacheLn, gwLns := p.lns[0], p.lns[1], p.lns[2], p.lns[3], p.lns[4:]
	var tlsLn net.Listener
	if cfg.TLS {
		tlsLn, gwLns = gwLns[len(gwLns)-1], gwLns[:len(gwLns)-1]
		p.HTTPSURL = "https://" + tlsLn.Addr().String()
	}
	dialGateway, err := GatewaySockets(gwLns)
	if err != nil {
		log.Warn("the balancer reaches the gateways over TCP", "err", err)
	}
	// Gateways can be killed (KillGateway), as well as stopped. gwLns
	// shares p.lns's array: teardown closes what the gateways listen on.
	for i, ln := range gwLns {
		k := newKillableListener(ln)
		gwLns[i], p.gwKill = k, append(p.gwKill, k)
	}
	p.BalancerURL, p.AdminURL = "http://"+balLn.Addr().String(), "http://"+adminLn.Addr().String()
	p.DBURL, p.CacheURL = "http://"+dbLn.Addr().String(), "http://"+cacheLn.Addr().String()
	for _, ln := range gwLns {
		p.GatewayURLs = append(p.GatewayURLs, "http://"+ln.Addr().String())
	}

	// The same permission model as a cluster (natsconf/permissions.go):
	// each role connects as its own user, with passwords made for this
	// run, so nothing that works here needs more rights in production.
	if p.Passwords, err = natsconf.RandomPasswords(); err != nil {
		return nil, err
	}
	if err := makeDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	var maxStore int64 // the server's default, unguarded
	if cfg.StoreReserve > 0 {
		maxStore = natsconf.GuardMaxStore
	}
	p.ns, err = natsconf.StartEmbedded(natsconf.Embedded{
		Host: cfg.NATSHost, Port: cfg.NATSPort, HTTPPort: cfg.NATSHTTPPort,
		StoreDir: storeDir, MaxStore: maxStore, Passwords: p.Passwords,
	}, log)
	if err != nil {
		return nil, err
	}
	p.NATSURL = p.ns.ClientURL()
	if a := p.ns.MonitorAddr(); a != nil {
		p.NATSMonitorURL = "http://" + a.String()
	}

	// Provision the task streams, as admin, before the roles start: the
	// gateways and workers only open them (their NATS users may not create
	// or update a stream).
	provision := task.DefaultProvisionConfig()
	provision.MaxQueueMsgs, provision.MaxRecordBytes = cfg.MaxQueue, cfg.MaxTaskBytes
	// The platform's own connection, as the operator: provisioning now,
	// readiness checks later, and for callers after that.
	admin := string(natsconf.RoleAdmin)
	p.Admin, err = nats.Connect(p.NATSURL, nats.Name("scalelab-up"), nats.InProcessServer(p.ns),
		nats.UserInfo(admin, p.Passwords[natsconf.RoleAdmin]), nats.CustomInboxPrefix(natsconn.InboxPrefix(admin)))
	if err != nil {
		return nil, fmt.Errorf("up: connect to embedded nats: %w", err)
	}
	if p.NATSContext, err = writeNATSContext(cfg.DataDir, p.NATSURL, admin, p.Passwords[natsconf.RoleAdmin]); err != nil {
		return nil, err
	}
	if err := provisionTasks(ctx, p.Admin, provision); err != nil {
		return nil, err
	}

	// One task index for every gateway of the process (gateway.TaskIndex),
	// on a connection of its own as the gateway user: each gateway would
	// otherwise follow the tasks bucket itself, reading every write of
	// every task once per gateway.
	p.indexNC, err = natsconn.Connect(ctx, natsconn.Options{URL: p.NATSURL, Name: "scalelab-taskindex",
		User: string(natsconf.RoleGateway), Password: p.Passwords[natsconf.RoleGateway], InProcess: p.ns}, log)
	if err != nil {
		return nil, err
	}
	index, err := gateway.StartTaskIndex(ctx, p.indexNC, log.With("role", "gateway"))
	if err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}

	roles, balCfg, err := cfg.roles(dbLn, cacheLn, gwLns, balLn, adminLn, index)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if balCfg.Dial == nil {
		balCfg.Dial = dialGateway
	}
	if tlsLn != nil {
		certFile, keyFile, err := certs.SelfSigned(filepath.Join(cfg.DataDir, tlsDir), []string{"127.0.0.1", "::1", "localhost"}, time.Now())
		if err != nil {
			return nil, fmt.Errorf("up: --tls: %w", err)
		}
		balCfg.TLS = balancer.TLSConfig{Listener: tlsLn, CertFile: certFile, KeyFile: keyFile}
		p.TLSCert = certFile
	}
	// The balancer's live dashboard reads the figures over NATS as its own
	// read-only user, as `scalelab balancer --nats-user balancer` does.
	if balCfg.Dashboard == nil {
		balCfg.Dashboard = dashboard.New(dashboard.Config{NATS: natsconn.Options{
			URL: p.NATSURL, Name: "scalelab-balancer", InProcess: p.ns,
			User: string(natsconf.RoleBalancer), Password: p.Passwords[natsconf.RoleBalancer],
		}}, log.With("role", "balancer"))
	}
	if err := p.startRoles(ctx, balCfg, roles); err != nil {
		return nil, err
	}

	// Ready only when it is: every HTTP role answers /readyz and a worker
	// answers the process service (dbsvc seeds on first start).
	readyURLs := []string{p.BalancerURL + "/-/readyz", p.DBURL + "/readyz", p.CacheURL + "/readyz"}
	for _, b := range p.GatewayURLs {
		readyURLs = append(readyURLs, b+"/readyz")
	}
	if err := waitReady(ctx, p.Admin, readyURLs, log); err != nil {
		return nil, err
	}
	if cfg.StoreReserve > 0 {
		// Once the roles have provisioned what they own (cachesvc its
		// bucket): the guard's limit also caps the bytes a new stream
		// may reserve.
		p.guardStore(ctx, natsconf.StoreGuard{Dir: storeDir, Reserve: cfg.StoreReserve, Interval: cfg.GuardInterval})
	}
	select {
	case <-p.stopped: // stopped, or a role failed, before it was up
		return nil, ctx.Err()
	default:
	}
	return p, nil
}

// guardStore runs natsconf.GuardStore until the platform stops. Without
// it (an OS whose free space it cannot read) the platform runs on, with a
// warning: the guard protects the store, nothing depends on it.
func (p *Platform) guardStore(ctx context.Context, g natsconf.StoreGuard) {
	p.roles.Go(func() error {
		if err := natsconf.GuardStore(ctx, p.ns, g, p.log); err != nil {
			p.log.Warn("the jetstream store is not guarded: a full disk may stop it until a restart", "err", err)
		}
		return nil
	})
}

// startRoles starts the balancer and every role on its own NATS
// connection, in p.roles; the first to fail stops the rest (p.stopped).
func (p *Platform) startRoles(ctx context.Context, balCfg balancer.Config, roles []role) error {
	p.roles.Go(func() error { return p.stopOnError(balancer.Run(ctx, balCfg, p.log)) })
	for i := range roles {
		r := &roles[i]
		// Each role has its own connection, as it would as a process: its
		// name shows in the server's /connz, and draining one
		// does not cut the others off. The connections are in-process
		// pipes, not TCP: the same protocol, without a system call per
		// message (natsconn.Options.InProcess).
		nc, err := natsconn.Connect(ctx, natsconn.Options{URL: p.NATSURL, Name: "scalelab-" + r.name,
			User: string(r.user), Password: p.Passwords[r.user], InProcess: p.ns}, p.log)
		if err != nil {
			return err
		}
		// A role's own context lets one gateway be stopped (StopGateway)
		// while the rest run on.
		rctx, rcancel := context.WithCancel(ctx)
		r.done = make(chan struct{})
		if r.user == natsconf.RoleGateway {
			p.gwStop, p.gwDone = append(p.gwStop, rcancel), append(p.gwDone, r.done)
		}
		p.roles.Go(func() error {
			defer close(r.done)
			defer rcancel()
			err := r.start(rctx, nc, p.log)
			if derr := natsconn.Close(nc, DrainTimeout); derr != nil {
				p.log.Warn("nats drain", "conn", r.name, "err", derr)
			}
			return p.stopOnError(err)
		})
	}
	return nil
}

// stopOnError passes a role's exit error on, and stops the platform when
// there is one: a failed role takes the platform down, a stopped one
// (StopGateway) does not.
func (p *Platform) stopOnError(err error) error {
	if err != nil {
		p.cancel()
	}
	return err
}

// teardown takes the platform down, from whatever point Start reached:
// it stops the roles and waits for them, closes every listener (those of
// roles never started; the others are closed already), the operator's
// connection and the NATS server. It returns the first role's error.
func (p *Platform) teardown() error {
	p.cancel()
	err := p.roles.Wait()
	closeAll(p.lns)
	if p.Admin != nil {
		p.Admin.Close()
	}
	if p.indexNC != nil {
		p.indexNC.Close()
	}
	if p.ns != nil {
		p.ns.Shutdown()
		p.ns.WaitForShutdown()
		p.log.Info("embedded nats stopped")
	}
	return err
}

// roles lists every role of cfg, and the balancer's config, over the
// listeners Start bound.
func (cfg *Config) roles(dbLn, cacheLn net.Listener, gwLns []net.Listener, balLn, adminLn net.Listener, index *gateway.TaskIndex) ([]role, balancer.Config, error) {
	var roles []role
	var errs []error
	dbCfg := dbsvc.DefaultConfig()
	dbCfg.Listener, dbCfg.DataDir, dbCfg.SeedRows, dbCfg.ShutdownTimeout = dbLn, cfg.DataDir, cfg.SeedRows, cfg.ShutdownTime
	dbCfg.MaxDBBytes = cfg.MaxDBBytes
	cacheCfg := cachesvc.DefaultConfig()
	cacheCfg.Listener, cacheCfg.ShutdownTimeout, cacheCfg.JWT = cacheLn, cfg.ShutdownTime, cfg.Keys
	roles = append(roles,
		role{name: "dbsvc", user: natsconf.RoleDBSvc, start: func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return dbsvc.Run(ctx, dbCfg, nc, log)
		}},
		role{name: "cachesvc", user: natsconf.RoleCacheSvc, start: func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
			return cachesvc.Run(ctx, cacheCfg, nc, log)
		}},
	)
	for i := range cfg.Workers {
		wCfg := worker.DefaultConfig()
		wCfg.ID = DefaultID("") + fmt.Sprintf("/worker-%d", i+1)
		wCfg.ReportDuration, wCfg.ShutdownTimeout, wCfg.Concurrency = cfg.ReportDuration, cfg.ShutdownTime, cfg.Concurrency
		wCfg.Provision.MaxQueueMsgs, wCfg.Provision.MaxRecordBytes = cfg.MaxQueue, cfg.MaxTaskBytes
		errs = append(errs, wCfg.Validate())
		roles = append(roles, role{name: fmt.Sprintf("worker-%d", i+1), user: natsconf.RoleWorker,
			start: func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
				return worker.Run(ctx, wCfg, nc, log)
			}})
	}
	var backends []string
	for i, gwCfg := range cfg.gatewayConfigs(gwLns) {
		gwCfg.TaskIndex = index
		errs = append(errs, gwCfg.Validate())
		backends = append(backends, "http://"+gwLns[i].Addr().String())
		roles = append(roles, role{name: fmt.Sprintf("gateway-%d", i+1), user: natsconf.RoleGateway,
			start: func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error {
				return gateway.Run(ctx, gwCfg, nc, log)
			}})
	}
	balCfg := balancer.DefaultConfig()
	balCfg.Listener, balCfg.ShutdownTimeout = balLn, cfg.ShutdownTime
	// The admin listener's drain and undrain take tokens with scope
	// admin, signed with the platform's keys.
	balCfg.AdminListener, balCfg.AdminAddr, balCfg.JWT = adminLn, cfg.AdminAddr, cfg.Keys
	balCfg.Backends, balCfg.Policy = backends, cfg.Policy
	balCfg.EventLoops = EventLoops()
	balCfg.Weights = cfg.Weights
	if cfg.HealthInterval > 0 {
		balCfg.HealthInterval = cfg.HealthInterval
	}
	return roles, balCfg, errors.Join(append(errs, dbCfg.Validate(), cacheCfg.Validate(), balCfg.Validate())...)
}

// gatewayConfigs is the config of each gateway, one per listener.
func (cfg *Config) gatewayConfigs(lns []net.Listener) []gateway.Config {
	out := make([]gateway.Config, len(lns))
	for i, ln := range lns {
		c := gateway.DefaultConfig()
		c.Listener, c.JWT, c.ShutdownTimeout = ln, cfg.Keys, cfg.ShutdownTime
		c.ID = DefaultID(ln.Addr().String())
		if i < len(cfg.GatewayIDs) && cfg.GatewayIDs[i] != "" {
			c.ID = cfg.GatewayIDs[i]
		}
		if i < len(cfg.GatewayLatency) {
			c.InjectLatency = cfg.GatewayLatency[i]
		}
		c.Provision.MaxQueueMsgs, c.Provision.MaxRecordBytes = cfg.MaxQueue, cfg.MaxTaskBytes
		c.Cache, c.Limits = cfg.Cache, cfg.Limits
		// The balancer reaches the gateways from loopback: over TCP, or
		// over the Unix sockets, whose peers say 127.0.0.1 (sockets.go).
		c.TrustedProxies = gateway.LoopbackProxies()
		c.BcryptSlots = cfg.BcryptSlots
		out[i] = c
	}
	return out
}

// EventLoops is the number of event loops the platform's balancer runs:
// half the Ps, at least one. The balancer shares this process with every
// other role, and an idle loop keeps its P while it waits in epoll_wait
// (see balancer.Config.EventLoops): with a loop per P, the gateways' and
// the NATS server's goroutines waited for sysmon to take a P back, which
// put the front door's median latency at 4-7 ms against 0.4 ms for a
// standalone balancer in front of the same gateways (bench/frontdoor.sh).
// `scalelab up` doubles GOMAXPROCS first (ReserveLoopProcs), so that the
// loops get a P per core and the other roles as many again.
func EventLoops() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// ReserveLoopProcs doubles GOMAXPROCS, unless the GOMAXPROCS environment
// variable sets it, so that EventLoops is one loop per core and the rest of
// the process keeps a P per core beside them. A P whose loop waits in a
// system call uses no CPU, so the extra Ps cost no parallelism; they let the
// runtime run other goroutines while the loops wait. It returns the bcrypt
// slots for each gateway (Config.BcryptSlots), from the cores: the
// gateway's default, from the doubled GOMAXPROCS, would be a compare per
// core. With GOMAXPROCS set it changes nothing and returns 0. It changes
// the whole process, so only commands call it (`up`, `bench`), never a
// library.
func ReserveLoopProcs(getenv func(string) string) (bcryptSlots int) {
	if getenv("GOMAXPROCS") != "" {
		return 0
	}
	// From the runtime's default, not from GOMAXPROCS as it is: a process
	// that runs `up` more than once (its tests) would otherwise double it
	// again each time.
	runtime.SetDefaultGOMAXPROCS()
	n := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(2 * n)
	return gateway.DefaultBcryptSlots(n)
}

// Wait blocks until the platform stops (its ctx ends, Stop is called or a
// role fails), takes it down and returns why: nil after a clean stop,
// else the first role's error.
func (p *Platform) Wait() error {
	p.once.Do(func() {
		<-p.stopped
		p.err = p.teardown()
	})
	return p.err
}

// Stop drains every role, stops the server and waits for all of it.
func (p *Platform) Stop() error {
	p.cancel()
	return p.Wait()
}

// StopGateway stops gateway i (from 0) as SIGTERM stops one, and waits
// until it has drained, while the rest of the platform runs on: the
// balancer then sees its connections refused. It is for drills and
// benchmarks of a lost gateway.
func (p *Platform) StopGateway(i int) error {
	if i < 0 || i >= len(p.gwStop) {
		return fmt.Errorf("platform: no gateway %d (there are %d)", i, len(p.gwStop))
	}
	p.gwStop[i]()
	<-p.gwDone[i]
	return nil
}

// KillGateway kills gateway i (from 0) as SIGKILL would, as far as HTTP
// goes: its port refuses connections at once and its open connections are
// reset, requests in flight unanswered. (Its NATS side runs on until the
// platform stops: in one process, only the HTTP side can die alone.) It is
// for drills and benchmarks of a crashed gateway.
func (p *Platform) KillGateway(i int) error {
	if i < 0 || i >= len(p.gwKill) {
		return fmt.Errorf("platform: no gateway %d (there are %d)", i, len(p.gwKill))
	}
	p.gwKill[i].kill()
	return nil
}

// DefaultID is DESIGN.md's default role id: hostname and port.
func DefaultID(addr string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "" && port != "0" {
		return host + ":" + port
	}
	return host
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

// writeNATSContext writes a nats CLI context for user (the operator) to
// dataDir and returns its absolute path: natscli takes a path ending in
// .json as --context or NATS_CONTEXT. The file holds the password, so
// only its owner may read it; each run overwrites it with the run's
// password.
func writeNATSContext(dataDir, url, user, password string) (string, error) {
	path, err := filepath.Abs(filepath.Join(dataDir, NATSContextFile))
	if err != nil {
		return "", fmt.Errorf("up: nats context: %w", err)
	}
	b, err := json.MarshalIndent(map[string]string{
		"description": "scalelab up: the operator (admin) on the embedded server",
		"url":         url, "user": user, "password": password,
		// The services answer admin only under _INBOX.admin
		// (natsconf.repliesTo): `nats micro ls` needs it.
		"inbox_prefix": natsconn.InboxPrefix(user),
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

// waitReady polls until every URL answers 200 and the process service
// answers a ping. It returns early, with no error, when ctx ends (a stop,
// or a role failed: the caller's errgroup has the reason).
func waitReady(ctx context.Context, nc *nats.Conn, urls []string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
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
		_, perr := nc.Request("$SRV.PING."+wire.ProcessService, nil, time.Second)
		if len(pending) == 0 && perr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("up: not ready after %v: waiting for %v (process service: %v)", ReadyTimeout, pending, perr)
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
