package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/cachesvc"
	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/gateway"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/platform"
	"github.com/scalelab/scalelab/platform/dashboard"
	"github.com/scalelab/scalelab/worker"
)

// ErrUsage marks errors caused by bad command-line input or configuration;
// main exits 2 on them.
var ErrUsage = errors.New("usage")

// usageErr wraps err so that errors.Is(err, ErrUsage) holds.
func usageErr(err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) }

const usage = `scalelab — load balancing, caching and async processing on NATS

Usage:
  scalelab up        [flags]   run everything in one process with an embedded NATS server
  scalelab balancer  [flags]   the HTTP front door (:8000); its /-/ routes and live dashboard on 127.0.0.1:8001
  scalelab gateway   [flags]   an API gateway (:5000); needs SCALELAB_JWT_SECRET
  scalelab worker    [flags]   the process service and task worker
  scalelab cachesvc  [flags]   the shared cache (:5004)
  scalelab dbsvc     [flags]   the SQLite database service (:5002)
  scalelab token     [flags]   print a token signed with SCALELAB_JWT_SECRET
  scalelab tasks ls|get|cancel|retry list and steer tasks over HTTP with a token (SCALELAB_TOKEN)
  scalelab tasks dlq ls|retry <id>   list or re-queue dead tasks
  scalelab tasks provision           create or update the task streams (as admin)
  scalelab schedules ls|add|rm       recurring tasks, over HTTP with a token (SCALELAB_TOKEN)
  scalelab users add <name> [--scope S]   create or update a user; password from stdin
  scalelab probe     URL       exit 0 if GET URL answers 2xx (container health checks)
  scalelab bench     <scenario>   run an experiment (cache, scale, async, balance, all) and write a report with charts
  scalelab bench compare A.json B.json   compare two runs of a scenario
  scalelab chaos                   faults at load on the compose stack, counted (chaos -h)

Run 'scalelab <command> -h' for the flags of a command.
`

// Run is the whole program: args are the command line without the
// program's name, getenv reads the environment, and stdin, stdout and
// stderr are the process's streams. main only adds signals and the exit
// code: Run holds no globals, so tests run it as main does.
func Run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr(errors.New("no command given"))
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "up":
		return runUp(ctx, rest, getenv, stdout, stderr)
	case "token":
		return runToken(rest, getenv, stdout, stderr)
	case "tasks":
		return runTasks(ctx, rest, getenv, stdout, stderr)
	case "schedules":
		return runSchedules(ctx, rest, getenv, stdout, stderr)
	case "users":
		return runUsers(ctx, rest, getenv, stdin, stdout, stderr)
	case "probe":
		return runProbe(ctx, rest, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "chaos":
		return runChaos(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	r, ok := roles[cmd]
	if !ok {
		fmt.Fprint(stderr, usage)
		return usageErr(fmt.Errorf("unknown command %q", cmd))
	}
	return runRole(ctx, cmd, r, rest, getenv, stderr)
}

// common are the flags every command has.
type common struct {
	NATSURL string
	// NATSUser and NATSPasswordFile name the NATS credentials; the
	// password itself comes only from the environment or that file, never
	// from a flag, which would show in process listings.
	NATSUser         string
	NATSPasswordFile string
	LogFormat        string
	LogLevel         string
}

// envNATSPassword holds the NATS password of --nats-user.
const envNATSPassword = "SCALELAB_NATS_PASSWORD"

func (c *common) register(s *envflag.Set, withNATS bool) {
	if withNATS {
		c.registerNATS(s, nats.DefaultURL, "NATS server URL(s), comma-separated")
	}
	s.String(&c.LogFormat, "log-format", "SCALELAB_LOG_FORMAT", logFormatAuto, "log format: text or json (default: text on a terminal, else json)")
	s.String(&c.LogLevel, "log-level", "SCALELAB_LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

// registerNATS defines the NATS connection flags, --nats defaulting to
// defaultURL.
func (c *common) registerNATS(s *envflag.Set, defaultURL, urlUsage string) {
	s.String(&c.NATSURL, "nats", "SCALELAB_NATS_URL", defaultURL, urlUsage)
	s.String(&c.NATSUser, "nats-user", "SCALELAB_NATS_USER", "", "NATS user (none: connect without credentials); its password is "+envNATSPassword+" or --nats-password-file")
	s.String(&c.NATSPasswordFile, "nats-password-file", "SCALELAB_NATS_PASSWORD_FILE", "", "file holding the NATS password of --nats-user (trailing newlines dropped)")
}

// natsOptions returns the connection settings for a connection named name.
// It returns a usage error for credentials that do not fit together (a
// password and a file, a user without a password, a password without a
// user) or a password file that cannot be read.
func (c *common) natsOptions(getenv func(string) string, name string) (natsconn.Options, error) {
	o := natsconn.Options{URL: c.NATSURL, Name: name, User: c.NATSUser, Password: getenv(envNATSPassword)}
	if c.NATSPasswordFile != "" {
		if o.Password != "" {
			return o, usageErr(fmt.Errorf("set %s or --nats-password-file, not both", envNATSPassword))
		}
		b, err := os.ReadFile(c.NATSPasswordFile)
		if err != nil {
			return o, usageErr(fmt.Errorf("--nats-password-file: %w", err))
		}
		o.Password = strings.TrimRight(string(b), "\r\n")
	}
	if err := o.Validate(); err != nil {
		return o, usageErr(fmt.Errorf("--nats-user, %s: %w", envNATSPassword, err))
	}
	return o, nil
}

func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return newLogger(stderr, c.LogFormat, level)
}

// roleCommand is one role as a command. Its constructor (in roles)
// registers the role's flags; once they are parsed, validate checks the
// config and run runs the role until ctx ends (nc is nil for a role that
// does not use NATS).
type roleCommand struct {
	usesNATS bool
	validate func() error
	run      func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error
}

// roles are the commands that run one role, by name.
var roles = map[string]func(s *envflag.Set) roleCommand{
	"gateway":  natsRole(gateway.DefaultConfig, func(c *gateway.Config) { defaultID(&c.ID, c.Addr) }, gateway.Run),
	"worker":   natsRole(worker.DefaultConfig, func(c *worker.Config) { defaultID(&c.ID, c.Addr) }, worker.Run),
	"cachesvc": natsRole(cachesvc.DefaultConfig, nil, cachesvc.Run),
	"dbsvc":    natsRole(dbsvc.DefaultConfig, nil, dbsvc.Run),
	"balancer": balancerRole,
}

// natsRole is the command of a role that runs on NATS, as four of the five
// do: a config C whose flags *C registers and validates, made by
// defaults and, once parsed, completed by fill (nil: nothing to fill in).
func natsRole[C any, P interface {
	*C
	RegisterFlags(*envflag.Set)
	Validate() error
}](defaults func() C, fill func(*C), run func(context.Context, C, *nats.Conn, *slog.Logger) error) func(*envflag.Set) roleCommand {
	return func(s *envflag.Set) roleCommand {
		cfg := defaults()
		P(&cfg).RegisterFlags(s)
		return roleCommand{
			usesNATS: true,
			validate: func() error {
				if fill != nil {
					fill(&cfg)
				}
				return P(&cfg).Validate()
			},
			run: func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error { return run(ctx, cfg, nc, log) },
		}
	}
}

// balancerRole is the balancer's command: no NATS of its own, but an
// optional connection for the live dashboard.
func balancerRole(s *envflag.Set) roleCommand {
	cfg := balancer.DefaultConfig()
	cfg.RegisterFlags(s)
	// NATS is optional here: only the live dashboard (/-/dashboard)
	// reads it, as the read-only user balancer, and it connects in the
	// background, so the front door never waits for NATS.
	var c common
	c.registerNATS(s, "", "NATS server URL(s) for the dashboard's figures (none: the balancer's own only)")
	return roleCommand{
		validate: func() error { return cfg.Validate() },
		run: func(ctx context.Context, _ *nats.Conn, log *slog.Logger) error {
			var opts natsconn.Options
			if c.NATSURL != "" {
				var err error
				if opts, err = c.natsOptions(s.Getenv, "scalelab-balancer"); err != nil {
					return err
				}
			}
			cfg.Dashboard = dashboard.New(dashboard.Config{NATS: opts}, log.With("role", "balancer"))
			if cfg.ConfigFile != "" || cfg.TLS.On() {
				cfg.Reload = hangups(ctx)
			}
			reserveLoopProcs(s.Getenv, &cfg)
			return balancer.Run(ctx, cfg, log)
		},
	}
}

// reserveLoopProcs gives the event loops a loop per core and the rest of
// the balancer as many Ps again, as up does (platform.ReserveLoopProcs),
// unless GOMAXPROCS is set. An idle loop holds its P in epoll_wait; with
// a loop per P, the goroutines that serve HTTPS, HTTP/2 and upgrades
// (and health checks, the admin listener) waited for the runtime's sysmon
// to take a P back: with TLS on and plain HTTP idle, the machine sat 11 %
// idle under wrk and HTTPS served 0.84-0.90x nginx and HAProxy at 1.65-1.80x
// their p99; with the Ps reserved, 0.95-1.00x at 0.90x (bench/README.md).
func reserveLoopProcs(getenv func(string) string, cfg *balancer.Config) {
	if cfg.Engine != balancer.EngineLoop || getenv("GOMAXPROCS") != "" {
		return
	}
	platform.ReserveLoopProcs(getenv)
	if cfg.EventLoops == 0 {
		cfg.EventLoops = platform.EventLoops()
	}
}

// defaultID sets an instance id left empty to the one derived from the
// instance's listen address.
func defaultID(id *string, addr string) {
	if *id == "" {
		*id = platform.DefaultID(addr)
	}
}

// runRole runs one role against an external NATS server.
func runRole(ctx context.Context, name string, newRole func(*envflag.Set) roleCommand, args []string, getenv func(string) string, stderr io.Writer) error {
	fs, s := newFlags("scalelab "+name, "", getenv, stderr)
	var c common
	r := newRole(s)
	c.register(s, r.usesNATS)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("%s: unexpected arguments %q", name, fs.Args()))
	}
	log, err := c.logger(stderr)
	if err != nil {
		return usageErr(err)
	}
	if err := errors.Join(s.Err(), r.validate()); err != nil {
		return usageErr(err)
	}
	var nc *nats.Conn
	if r.usesNATS {
		opts, err := c.natsOptions(getenv, "scalelab-"+name)
		if err != nil {
			return err
		}
		nc, err = natsconn.Connect(ctx, opts, log)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted while waiting for NATS
			}
			return err
		}
	}
	err = r.run(ctx, nc, log)
	if r.usesNATS {
		if derr := natsconn.Close(nc, platform.DrainTimeout); derr != nil {
			log.Warn("nats drain", "err", derr)
		}
	}
	return err
}

// runToken prints a token signed with SCALELAB_JWT_SECRET (HS256) or, with
// --key-file, with an Ed25519 or RSA private key (EdDSA or RS256) whose
// public half the gateways hold in their JWKS. With --jwks it prints that
// JWKS instead of a token.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, s := newFlags("scalelab token", "", getenv, stderr)
	var sub, scope, keyFile, kid string
	var ttl time.Duration
	var printJWKS bool
	s.String(&sub, "sub", "", "dev", "subject (user name) of the token")
	s.String(&scope, "scope", "", strings.Join(auth.AllScopes, " "), "space-separated scopes")
	s.Duration(&ttl, "ttl", "", time.Hour, "lifetime of the token")
	s.String(&keyFile, "key-file", "", "", "PEM Ed25519 or RSA private key (PKCS#8, as openssl genpkey writes): sign EdDSA or RS256 instead of HS256")
	s.String(&kid, "kid", "", "", "key id for --key-file, as in the gateways' JWKS (default: the key's RFC 7638 thumbprint)")
	s.Bool(&printJWKS, "jwks", "", false, "print the JWKS holding --key-file's public key, for SCALELAB_JWT_JWKS_FILE, instead of a token")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	keys := auth.KeysFromEnv(getenv)
	var errs []error
	var signer auth.SigningKey
	if keyFile != "" {
		var err error
		if signer, err = auth.ReadSigningKeyFile(keyFile, kid); err != nil {
			errs = append(errs, fmt.Errorf("token: --key-file: %w", err))
		}
		// The secret is not needed to sign with a private key.
		if keys.Issuer == "" || keys.Audience == "" {
			errs = append(errs, errors.New("token: JWT issuer and audience must not be empty"))
		}
	} else {
		if kid != "" || printJWKS {
			errs = append(errs, errors.New("token: --kid and --jwks need --key-file"))
		}
		if err := keys.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("token: %w", err))
		}
	}
	if sub == "" {
		errs = append(errs, errors.New("token: --sub must not be empty"))
	}
	if ttl <= 0 {
		errs = append(errs, fmt.Errorf("token: --ttl must be positive, got %v", ttl))
	}
	if err := errors.Join(errs...); err != nil {
		return usageErr(err)
	}
	if printJWKS {
		pub, err := signer.Public()
		if err != nil {
			return err
		}
		b, err := auth.MarshalJWKS([]auth.PublicKey{pub})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	var tok string
	var err error
	if keyFile != "" {
		tok, _, err = keys.IssueWith(signer, sub, strings.Fields(scope), ttl, time.Now())
	} else {
		tok, _, err = keys.Issue(sub, strings.Fields(scope), ttl, time.Now())
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// hangups sends on the channel it returns at each SIGHUP until ctx ends:
// the balancer's reload (nginx's and HAProxy's signal for it too).
func hangups(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				default: // a reload is pending already
				}
			}
		}
	}()
	return out
}
