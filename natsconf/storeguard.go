package natsconf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// GuardMaxStore is the server-wide JetStream store limit (Embedded.MaxStore)
// of a server that GuardStore watches: 1 PiB, no limit in practice. The
// guard's account limit is the real one. The server's own default (75 % of
// the disk's free space when it starts) is fixed for the server's life, so
// it misses space taken or freed later, and it is counted against the
// streams' reserved bytes and every account's limit (the server refuses an
// account limit that, added to the streams' byte limits, passes it), which
// would refuse the guard's limit on any disk smaller than 4 GiB plus its
// free space.
const GuardMaxStore = 1 << 50

// DefaultGuardInterval is how often GuardStore looks at the disk when
// StoreGuard.Interval is 0.
const DefaultGuardInterval = time.Second

// StoreGuard says what GuardStore watches.
type StoreGuard struct {
	// Dir is the JetStream store directory: the guard watches the free
	// space of its filesystem.
	Dir string
	// Reserve is the free space, in bytes, JetStream leaves on that
	// filesystem: room for what the store's message bytes do not count
	// (index files, deleted messages not yet compacted) and for whatever
	// else writes there (`up`'s SQLite file shares the data directory).
	Reserve int64
	// Interval is how often it looks (0: DefaultGuardInterval). JetStream
	// may write up to the free space less Reserve between two looks, so
	// Reserve should cover what the platform writes in one Interval.
	Interval time.Duration
}

// GuardStore keeps the JetStream of ns, an embedded single server started
// with Embedded.MaxStore GuardMaxStore, from filling the disk of its store,
// and brings it back by itself when a full disk broke it. It runs until
// ctx ends and returns nil; it returns an error only if the platform
// cannot read the filesystem's free space at all (an unsupported OS).
//
// Why: on a real ENOSPC nats-server 2.15 does not answer the publish (the
// client times out), latches the error in the stream's file store ("critical
// write error"), and every later write to that stream fails the same way
// after space returns, until JetStream restarts; a full disk while a stream
// sources another (TASKS sources TASKS_DELAYED) disables JetStream outright
// ("JetStream out of space, will be DISABLED"). A store limit, instead, is
// answered per publish, at once, with "resource limits exceeded for account"
// (task.NoSpace), and lifts as soon as it is raised. So, every Interval:
//
//   - the global account's JetStream store limit is set to what the account
//     stores now plus the filesystem's free space less Reserve: JetStream
//     refuses writes cleanly while Reserve bytes are still free, and takes
//     them again when space returns (rm, purge, expiry), with no restart;
//   - if JetStream is disabled, or a stream has latched a write error (the
//     disk filled between two looks, or something else filled it), and the
//     free space is above Reserve again, JetStream is restarted in place
//     (ShutdownJetStream, EnableJetStream with its config: streams and
//     consumers are read back from disk, connections stay open); at most
//     once every 30 s, in case the cause is not space.
func GuardStore(ctx context.Context, ns *server.Server, g StoreGuard, log *slog.Logger) error {
	if g.Interval <= 0 {
		g.Interval = DefaultGuardInterval
	}
	if _, err := diskFree(g.Dir); err != nil {
		return fmt.Errorf("guard the jetstream store %s: %w", g.Dir, err)
	}
	jsCfg := ns.JetStreamConfig()
	if jsCfg == nil {
		return errors.New("guard the jetstream store: jetstream is not enabled")
	}
	// The server keeps its store under StoreDir/jetstream, and says so in
	// its config; EnableJetStream adds that directory to what it is given.
	if filepath.Base(jsCfg.StoreDir) == server.JetStreamStoreDir {
		jsCfg.StoreDir = filepath.Dir(jsCfg.StoreDir)
	}
	gd := &guard{ns: ns, g: g, cfg: *jsCfg, log: log.With("role", "nats", "store_dir", g.Dir)}
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	for {
		gd.check()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// guard is GuardStore's state between two looks.
type guard struct {
	ns    *server.Server
	g     StoreGuard
	log   *slog.Logger
	cfg   server.JetStreamConfig // to enable JetStream again with
	limit int64                  // the account limit last set; 0: none yet
	last  time.Time              // the last restart
	full  bool                   // the limit stops writes now (logged once per episode)
	wait  bool                   // broken, waiting for space (logged once per episode)
}

// check looks once: it restarts a broken JetStream if there is space for
// it, then sets the account's limit.
func (gd *guard) check() {
	free, err := diskFree(gd.g.Dir)
	if err != nil {
		gd.log.Warn("jetstream store guard: cannot read free space", "err", err)
		return
	}
	room := free - gd.g.Reserve
	if broken := gd.broken(); broken != "" {
		if room <= 0 {
			if !gd.wait {
				gd.log.Error("jetstream store broken by a full disk; it restarts once space is free", "cause", broken,
					"free_bytes", free, "reserve_bytes", gd.g.Reserve)
				gd.wait = true
			}
			return
		}
		if time.Since(gd.last) < minRestartGap {
			return // broken by something else than space, it seems
		}
		gd.restart(broken)
	}
	gd.wait = false
	gd.setLimit(room)
}

// minRestartGap is the least time between two restarts: a stream broken
// by something space does not cure (a permission, an I/O error) must not
// have JetStream restarted every Interval.
const minRestartGap = 30 * time.Second

// broken says why JetStream cannot write any more, or "" when it can.
func (gd *guard) broken() string {
	if !gd.ns.JetStreamEnabled() {
		return "jetstream is disabled"
	}
	h := gd.ns.Healthz(&server.HealthzOptions{Details: true})
	for _, e := range h.Errors {
		if strings.Contains(e.Error, "write error") {
			return e.Error
		}
	}
	return ""
}

// restart stops JetStream (if the server has not already) and enables it
// again with its config: streams and consumers are recovered from disk.
// The server logs each step.
func (gd *guard) restart(cause string) {
	start := time.Now()
	if gd.ns.JetStreamEnabled() {
		if err := gd.ns.ShutdownJetStream(); err != nil {
			gd.log.Error("jetstream store guard: stop jetstream", "err", err)
			return
		}
	}
	cfg := gd.cfg
	if err := gd.ns.EnableJetStream(&cfg); err != nil {
		gd.log.Error("jetstream store guard: enable jetstream again", "err", err)
		return
	}
	gd.limit, gd.last = 0, time.Now() // a new account: set its limit again
	gd.log.Warn("jetstream restarted after a full disk: space is free again", "cause", cause,
		"took", time.Since(start).String())
}

// setLimit sets the global account's store limit to its use plus room
// (the free space above the reserve); with no room, to its use: every
// write that adds bytes is refused.
func (gd *guard) setLimit(room int64) {
	acc := gd.ns.GlobalAccount()
	if acc == nil || !acc.JetStreamEnabled() {
		return
	}
	stats := acc.JetStreamUsage()
	used := int64(stats.Store)
	limit := max(used+room, used, 1)
	if limit == gd.limit {
		return
	}
	limits := stats.Limits
	limits.MaxStore = limit
	if err := acc.UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{"": limits}); err != nil {
		gd.log.Error("jetstream store guard: set the account's store limit", "limit_bytes", limit, "err", err)
		return
	}
	gd.limit = limit
	switch full := room <= 0; {
	case full && !gd.full:
		gd.log.Warn("jetstream store full: the disk has no more than its reserve free; writes are refused until space returns",
			"used_bytes", used, "reserve_bytes", gd.g.Reserve)
	case !full && gd.full:
		gd.log.Info("jetstream store has room again", "used_bytes", used, "room_bytes", room)
	}
	gd.full = room <= 0
}
