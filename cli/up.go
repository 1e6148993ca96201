package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/platform"
)

// upConfig is the configuration of `scalelab up`: the platform's, the
// dev token's lifetime and the garbage collector's pace.
type upConfig struct {
	platform.Config
	DevTokenTTL time.Duration
	GCPercent   int
}

// defaultGCPercent is up's GOGC. Every role and the NATS server share one
// heap here, and at the runtime's default (100) the collector ran about
// every second under load. In four A/B pairs of bench/tasks (2026-11-29,
// bench/README.md) 400 cost 5-17 % less CPU per task and gave 5-21 % more
// tasks/s; the price is memory: peak resident 235 MB against 110 MB.
const defaultGCPercent = 400

func (c *upConfig) register(s *envflag.Set) {
	c.Config.RegisterFlags(s)
	s.Duration(&c.DevTokenTTL, "token-ttl", "SCALELAB_TOKEN_TTL", 24*time.Hour, "lifetime of the printed dev token")
	s.Int(&c.GCPercent, "gc-percent", "SCALELAB_GC_PERCENT", defaultGCPercent, "garbage collector target percentage (GOGC), unless GOGC is set")
}

func (c *upConfig) validate() error {
	err := c.Config.Validate()
	if c.DevTokenTTL <= 0 {
		err = errors.Join(err, fmt.Errorf("up: --token-ttl must be positive, got %v", c.DevTokenTTL))
	}
	if c.GCPercent <= 0 {
		err = errors.Join(err, fmt.Errorf("up: --gc-percent must be positive, got %d", c.GCPercent))
	}
	return err
}

// runUp runs every role in one process over an embedded NATS server.
func runUp(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, s := newFlags("scalelab up", "", getenv, stderr)
	var c common
	c.register(s, false)
	var cfg upConfig
	cfg.register(s)
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
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
	if getenv("GOGC") == "" { // the runtime has read GOGC: it wins
		debug.SetGCPercent(cfg.GCPercent)
	}
	cfg.BcryptSlots = platform.ReserveLoopProcs(getenv)

	// Dev mode: a random secret unless one is given, so no token signed
	// with a well-known key ever works against a fresh `up`.
	generated, err := devKeys(&cfg.Config, getenv)
	if err != nil {
		return err
	}
	p, err := platform.Start(ctx, cfg.Config, log)
	if errors.Is(err, platform.ErrConfig) {
		return usageErr(err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil // interrupted before it was up
		}
		return err
	}

	token, exp, err := cfg.Keys.Issue("dev", auth.AllScopes, cfg.DevTokenTTL, time.Now())
	if err != nil {
		return errors.Join(err, p.Stop())
	}
	printBanner(stdout, bannerInfo{
		Balancer: p.BalancerURL, HTTPS: p.HTTPSURL, TLSCert: p.TLSCert, Admin: p.AdminURL, Gateways: p.GatewayURLs, DB: p.DBURL, Cache: p.CacheURL,
		NATS: p.NATSURL, Workers: cfg.Workers, DataDir: cfg.DataDir,
		Token: token, Expires: exp, GeneratedSecret: generated,
		NATSContext: p.NATSContext, NATSUser: string(natsconf.RoleAdmin), NATSPassword: p.Passwords[natsconf.RoleAdmin],
		WorkerPassword: p.Passwords[natsconf.RoleWorker], ClientPassword: p.Passwords[natsconf.RoleClient],
	})
	err = p.Wait()
	log.Info("scalelab stopped")
	return err
}

// devKeys sets cfg's keys from the environment, or to a random secret made
// for this run when it names none, and reports whether it made one.
func devKeys(cfg *platform.Config, getenv func(string) string) (generated bool, err error) {
	cfg.Keys = auth.KeysFromEnv(getenv)
	if len(cfg.Keys.Secret) > 0 {
		return false, nil
	}
	secret, err := auth.RandomSecret()
	if err != nil {
		return false, err
	}
	cfg.Keys.Secret = []byte(secret)
	return true, nil
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
	// WorkerPassword and ClientPassword are the passwords of the NATS
	// users "worker" (a worker program of your own: examples/wordcount)
	// and "client" (a program that submits tasks over NATS: client.NewNATS);
	// least privilege, unlike the operator's.
	WorkerPassword, ClientPassword string
	// Admin is the balancer's admin listener: its /-/ routes and the
	// dashboard.
	Admin string
	// HTTPS is the balancer's HTTPS (up --tls) and TLSCert the file of its
	// self-signed certificate; "" without --tls.
	HTTPS, TLSCert string
}

func printBanner(w io.Writer, b bannerInfo) {
	secretNote := "signed with SCALELAB_JWT_SECRET"
	if b.GeneratedSecret {
		secretNote = "signed with a random secret made for this run; set SCALELAB_JWT_SECRET (32+ bytes) to keep tokens across restarts"
	}
	https := ""
	if b.HTTPS != "" {
		https = fmt.Sprintf("  https     %s   (self-signed: curl --cacert %s %s/healthz)\n", b.HTTPS, b.TLSCert, b.HTTPS)
	}
	usersNATS := ""
	if b.NATS != nats.DefaultURL {
		usersNATS = " --nats " + b.NATS
	}
	fmt.Fprintf(w, `
scalelab is up
  balancer  %s   (the front door)
%s  admin     %s   (the balancer's /-/ routes; drain needs the token below)
  dashboard %s/-/dashboard
  console   %s/console/   (tasks: log in with a user, or paste the token below)
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

Serve a task type of your own (README: "Build your own task type") as NATS user worker:
SCALELAB_NATS_URL=%s SCALELAB_NATS_USER=worker SCALELAB_NATS_PASSWORD=%s go run ./examples/wordcount
(A program that submits tasks over NATS, client.NewNATS, logs in as user client, password %s.)

Inspect the bus:
go tool nats stream ls
go tool nats consumer info TASKS workers-default
go tool nats micro ls

Ctrl-C drains and stops everything.
`, b.Balancer, https, b.Admin, b.Admin, b.Balancer, strings.Join(b.Gateways, ", "), b.Workers, b.DB, b.Cache, b.NATS, b.DataDir,
		b.Expires.UTC().Format(time.RFC3339), secretNote, b.Token,
		b.NATSUser, b.NATSContext, b.NATSContext, b.NATSUser, b.NATSPassword,
		b.Token, b.Balancer, b.Token, b.Balancer, b.Token, b.Balancer, usersNATS, b.Balancer,
		b.NATS, b.WorkerPassword, b.ClientPassword)
}
