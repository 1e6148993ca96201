package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/platform"
)

// frontGateways is how many trivial servers serveFront puts behind its
// balancer: as many as `scalelab up` runs gateways by default.
const frontGateways = 2

// serveFront is the in-process two-hop ceiling of bench/cache/run.sh
// (issue #29): `up`'s front door with its gateways replaced by this
// trivial server. As in `up`, scalelab's balancer runs in the same process
// as the servers behind it, with a loop per core and as many Ps again
// (platform.ReserveLoopProcs, platform.EventLoops), and reaches each of
// them over an abstract Unix socket rather than loopback TCP
// (platform.GatewaySockets). A cached read through `up` can only be slower
// than this; the difference is the gateway's own work (echo, the token, the
// near-cache, the answer).
//
// A balancer as a process of its own in front of the trivial server over
// TCP (bench/cache/run.sh's twohop target) pays a loopback TCP hop and a
// second process that `up` does not, so it is no ceiling for `up`.
func serveFront(ctx context.Context, ln net.Listener, handler http.Handler) error {
	platform.ReserveLoopProcs(os.Getenv)
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := balancer.DefaultConfig()
	cfg.Listener, cfg.AdminAddr, cfg.Backends = ln, "127.0.0.1:0", nil
	cfg.EventLoops = platform.EventLoops()
	lns := make([]net.Listener, frontGateways)
	for i := range lns {
		tcp, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll(lns[:i])
			return err
		}
		lns[i] = tcp
		cfg.Backends = append(cfg.Backends, "http://"+tcp.Addr().String())
	}
	dial, err := platform.GatewaySockets(lns)
	if err != nil {
		log.Warn("the balancer reaches the trivial servers over TCP", "err", err)
	}
	cfg.Dial = dial
	servers := make([]*http.Server, len(lns))
	errc := make(chan error, len(lns))
	for i, l := range lns {
		servers[i] = newServer(handler)
		go func() { errc <- servers[i].Serve(l) }()
	}
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	balDone := make(chan error, 1)
	go func() { balDone <- balancer.Run(bctx, cfg, log) }()
	select {
	case err = <-balDone: // ctx ended, or the balancer failed
	case err = <-errc:
		stop()
		err = errors.Join(fmt.Errorf("serve: %w", err), <-balDone)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	return err
}

// closeAll closes lns, on a failed start.
func closeAll(lns []net.Listener) {
	for _, l := range lns {
		_ = l.Close()
	}
}
