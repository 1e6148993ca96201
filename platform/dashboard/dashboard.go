package dashboard

import (
	"context"
	"embed"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/internal/natsconn"
)

// static holds the page; it is served as it is.
//
//go:embed static
var static embed.FS

// DefaultInterval is the time between two samples: the figures' refresh.
const DefaultInterval = time.Second

// drainTimeout bounds the drain of the dashboard's NATS connection.
const drainTimeout = 5 * time.Second

// authRetry is how long the dashboard waits before it tries credentials
// that NATS refused again: not so often that it floods the server's log.
const authRetry = 30 * time.Second

// Config is a dashboard's configuration.
type Config struct {
	// Interval is the time between two samples; zero means DefaultInterval.
	Interval time.Duration
	// NATS is the connection the dashboard makes, as the NATS user
	// natsconf.RoleBalancer. An empty URL means no NATS: only the
	// balancer's figures.
	NATS natsconn.Options
	// MaxViewers caps the event streams open at once; past it GET /events
	// answers 503. Zero means 32. A stream costs a goroutine and a pipe,
	// and the reads of the balancer's admin listener need no token.
	MaxViewers int
}

// Dashboard samples the system and serves the page and its figures. It
// implements balancer.Dashboard.
type Dashboard struct {
	cfg Config
	log *slog.Logger

	// status reads the balancer; set by Handler.
	status atomic.Pointer[func() balancer.Status]
	// viewers counts the open event streams.
	viewers atomic.Int32

	mu sync.Mutex
	// latest is the last sample, encoded once for every viewer; nil until
	// the first.
	latest []byte
	// changed is closed when latest is replaced, and then replaced: a
	// broadcast without a list of subscribers.
	changed chan struct{}
}

// New returns a dashboard; it samples once Run runs.
func New(cfg Config, log *slog.Logger) *Dashboard {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxViewers <= 0 {
		cfg.MaxViewers = 32
	}
	return &Dashboard{cfg: cfg, log: log.With("component", "dashboard"), changed: make(chan struct{})}
}

// Run connects to NATS (when configured) and samples every Interval until
// ctx ends, then drains its connection. It never fails: a NATS that is
// down or refuses the credentials shows on the page, and is logged.
func (d *Dashboard) Run(ctx context.Context) {
	var conn connState
	var connecting sync.WaitGroup
	defer connecting.Wait()
	if d.cfg.NATS.URL != "" {
		conn.err.Store("connecting to NATS")
		connecting.Go(func() { d.connect(ctx, &conn) })
	} else {
		conn.err.Store("no NATS connection (the balancer was started without --nats)")
	}
	c := newCollector(d.cfg.Interval)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		d.publish(c.sample(ctx, d.readStatus(), conn.get))
		select {
		case <-ctx.Done():
			if nc := conn.nc.Load(); nc != nil {
				if err := natsconn.Close(nc, drainTimeout); err != nil {
					d.log.Warn("nats drain", "err", err)
				}
			}
			return
		case <-t.C:
		}
	}
}

// connState is the NATS connection as Run's loop sees it: the connection
// once made, or why there is none.
type connState struct {
	nc  atomic.Pointer[nats.Conn]
	err atomic.Value // string
}

// get returns the connection, or nil and why there is none.
func (s *connState) get() (*nats.Conn, string) {
	if nc := s.nc.Load(); nc != nil {
		if !nc.IsConnected() {
			return nil, "NATS connection lost, reconnecting"
		}
		return nc, ""
	}
	return nil, s.err.Load().(string)
}

// connect connects until it succeeds or ctx ends; refused credentials are
// tried again after authRetry.
func (d *Dashboard) connect(ctx context.Context, s *connState) {
	for {
		nc, err := natsconn.Connect(ctx, d.cfg.NATS, d.log)
		if err == nil {
			s.nc.Store(nc)
			if ctx.Err() != nil { // Run may have returned meanwhile
				nc.Close()
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		d.log.Error("dashboard: no NATS figures", "err", err, "retry_in", authRetry)
		s.err.Store("NATS refused the balancer's credentials (--nats-user " + d.cfg.NATS.User + ")")
		select {
		case <-ctx.Done():
			return
		case <-time.After(authRetry):
		}
	}
}

// readStatus returns the balancer's status, or nothing before Handler.
func (d *Dashboard) readStatus() *balancer.Status {
	f := d.status.Load()
	if f == nil {
		return nil
	}
	s := (*f)()
	return &s
}

// publish makes snap the latest sample and wakes every viewer.
func (d *Dashboard) publish(snap []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.latest = snap
	close(d.changed)
	d.changed = make(chan struct{})
}

// current returns the latest sample (nil before the first) and a channel
// closed when the next one is published.
func (d *Dashboard) current() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest, d.changed
}
