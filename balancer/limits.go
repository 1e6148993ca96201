package balancer

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// connLimiter counts the client connections open, in all and per IP
// address, for Config.MaxConns and Config.MaxConnsPerIP. A connection
// over either is closed as soon as it is accepted, before anything is read
// of it: past the caps a client costs the balancer an accept and a close.
// Both engines share one: a connection the event loops hand to the
// goroutine engine keeps its slot (see connSlot).
type connLimiter struct {
	max, perIP int
	mu         sync.Mutex
	total      int
	byIP       map[netip.Addr]int
	refused    atomic.Int64 // for the tests and the log
}

// newConnLimiter returns the limiter of cfg, or nil when it sets no cap
// (and has no configuration file, whose reload may set one).
func newConnLimiter(cfg Config) *connLimiter {
	if cfg.MaxConns == 0 && cfg.MaxConnsPerIP == 0 && cfg.ConfigFile == "" {
		return nil
	}
	return &connLimiter{max: cfg.MaxConns, perIP: cfg.MaxConnsPerIP, byIP: map[netip.Addr]int{}}
}

// setCaps changes the caps (a reload): connections open stay, new ones
// count against the new caps.
func (l *connLimiter) setCaps(max, perIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max, l.perIP = max, perIP
}

// connSlot is one client connection's place under the caps. release gives
// it back; it is safe to call more than once, and on a nil slot (no caps).
type connSlot struct {
	l    *connLimiter
	ip   netip.Addr
	done atomic.Bool
}

// acquire takes a slot for a connection from ip (invalid for a connection
// that is not TCP: only the total applies), or returns false when a cap
// is reached. A nil limiter has no caps.
func (l *connLimiter) acquire(ip netip.Addr) (*connSlot, bool) {
	if l == nil {
		return nil, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		l.refused.Add(1)
		return nil, false
	}
	if ip.IsValid() && l.perIP > 0 {
		if l.byIP[ip] >= l.perIP {
			l.refused.Add(1)
			return nil, false
		}
		l.byIP[ip]++
	}
	l.total++
	return &connSlot{l: l, ip: ip}, true
}

// release gives the slot back.
func (s *connSlot) release() {
	if s == nil || s.done.Swap(true) {
		return
	}
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if s.ip.IsValid() && l.perIP > 0 {
		if n := l.byIP[s.ip] - 1; n > 0 {
			l.byIP[s.ip] = n
		} else {
			delete(l.byIP, s.ip)
		}
	}
}

// remoteIP returns the IP address c comes from, or the zero Addr for a
// connection that is not TCP.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// bufferSize is the size of the buffers request and response bodies are
// written through.
const bufferSize = 32 << 10

// maxHeaderBytes bounds a request's header (431 past it), as nginx's
// default buffers do (4 × 8 KiB). fasthttp's server reads a header into one
// buffer of this size, held by every request it reads on the goroutine
// engine: with 64 KiB, 1,000 clients that send a header and stall cost
// about 80 MiB; with 32 KiB, half.
const maxHeaderBytes = 32 << 10

// maxAnswerHeaderBytes bounds a gateway answer's header. The gateways are
// trusted, their answers few at a time: it stays at net/http's old
// MaxHeaderBytes.
const maxAnswerHeaderBytes = 64 << 10

// maxRequestBody bounds a request body. The balancer reads a body whole
// before it sends it on (so that a retry can send it again); the gateways
// take at most 64 KiB (task.MaxPayloadBytes), so this leaves ample room.
const maxRequestBody = 8 << 20
