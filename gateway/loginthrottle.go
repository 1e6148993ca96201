package gateway

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// LoginLimits throttle failed logins (POST /auth/token), per user name and
// per client address. Past a threshold of failures a key is blocked for
// Backoff, doubled at each further failure up to MaxBackoff; blocked
// logins get 429 with Retry-After before any database or bcrypt work. A
// key's failures are forgotten after a Window without one.
type LoginLimits struct {
	// UserFailures is how many failures a user name may have in a row
	// before it is blocked.
	UserFailures int
	// IPFailures is the same per client address. Higher than
	// UserFailures: one address may be many people behind one NAT.
	IPFailures int
	// Window is how long a key must go without a failure (after its
	// block, if any) to start again from zero.
	Window time.Duration
	// Backoff is the first block; each further failure doubles it.
	Backoff time.Duration
	// MaxBackoff caps the block.
	MaxBackoff time.Duration
	// Keys bounds the user names and the addresses remembered, each (the
	// least recently failed go first), so that a flood of made-up names
	// cannot grow the gateway's memory.
	Keys int
}

// DefaultLoginLimits: 5 failures of a name, or 20 of an address, within a
// minute of each other block it for 30 s, then 1, 2, 4 … minutes per
// further failure, at most 15.
func DefaultLoginLimits() LoginLimits {
	return LoginLimits{UserFailures: 5, IPFailures: 20, Window: time.Minute, Backoff: 30 * time.Second, MaxBackoff: 15 * time.Minute, Keys: 100000}
}

// Validate reports every bad setting, prefixed with who.
func (l LoginLimits) Validate(who string) []error {
	var errs []error
	if l.UserFailures < 1 || l.IPFailures < 1 {
		errs = append(errs, fmt.Errorf("%s: login failure thresholds must be >= 1, got %d per user and %d per address", who, l.UserFailures, l.IPFailures))
	}
	if l.Window <= 0 || l.Backoff <= 0 || l.MaxBackoff < l.Backoff {
		errs = append(errs, fmt.Errorf("%s: login window and back-off must be positive with max >= first, got %v, %v, %v", who, l.Window, l.Backoff, l.MaxBackoff))
	}
	if l.Keys < 1 {
		errs = append(errs, fmt.Errorf("%s: login throttle keys must be >= 1, got %d", who, l.Keys))
	}
	return errs
}

// failures is one key's record.
type failures struct {
	n     int       // failures in a row, within Window of each other
	last  time.Time // of the last failure
	until time.Time // blocked until then
	// pending counts the logins let through (begin) and not yet released:
	// each may still become a failure.
	pending int
}

// pendingRetry is the Retry-After of a login refused because enough
// attempts on its key are in flight to reach the threshold: they settle
// within about a bcrypt compare.
const pendingRetry = time.Second

// failureCounter counts the failures of one kind of key (names or
// addresses) in a bounded LRU.
type failureCounter struct {
	threshold int
	keys      *simplelru.LRU[string, *failures]
}

// loginThrottle is the state of LoginLimits: one counter for names and
// one for addresses, so a flood of one kind cannot evict the other.
type loginThrottle struct {
	limits LoginLimits
	mu     sync.Mutex
	users  failureCounter
	ips    failureCounter
}

func newLoginThrottle(l LoginLimits) *loginThrottle {
	users, _ := simplelru.NewLRU[string, *failures](l.Keys, nil)
	ips, _ := simplelru.NewLRU[string, *failures](l.Keys, nil)
	return &loginThrottle{
		limits: l,
		users:  failureCounter{threshold: l.UserFailures, keys: users},
		ips:    failureCounter{threshold: l.IPFailures, keys: ips},
	}
}

// blocked says whether a login of user (empty: a name that cannot exist,
// not tracked) from ip may not be tried now, and for how long.
func (t *loginThrottle) blocked(user, ip string, now time.Time) (bool, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var wait time.Duration
	for _, k := range []struct {
		c   *failureCounter
		key string
	}{{&t.ips, ip}, {&t.users, user}} {
		if k.key == "" {
			continue
		}
		// Peek, not Get: a blocked attempt must not keep its key fresh.
		if f, ok := k.c.keys.Peek(k.key); ok && now.Before(f.until) {
			wait = max(wait, f.until.Sub(now))
		}
	}
	return wait > 0, wait
}

// begin lets a login of user from ip be tried now, or says for how long
// it may not. A login let through holds a reservation on its keys until
// release is called (once it has been recorded as failed or succeeded, or
// abandoned): a key whose recorded failures plus logins in flight reach
// its threshold lets no more through. Without it, the guesses sent at once
// would all pass the check while the first of them still waited for
// bcrypt, and a name would get as many guesses as the gateway can hold
// logins, not UserFailures.
func (t *loginThrottle) begin(user, ip string, now time.Time) (release func(), wait time.Duration) {
	if blocked, wait := t.blocked(user, ip, now); blocked {
		return nil, wait
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.keysOf(user, ip)
	for _, k := range keys {
		if f, ok := k.c.keys.Peek(k.key); ok && t.recent(f, now)+f.pending >= k.c.threshold {
			return nil, pendingRetry
		}
	}
	held := make([]*failures, 0, len(keys))
	for _, k := range keys {
		f, ok := k.c.keys.Get(k.key)
		if !ok {
			f = &failures{}
			k.c.keys.Add(k.key, f)
		}
		f.pending++
		held = append(held, f)
	}
	released := false
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if released {
			return
		}
		released = true
		for _, f := range held {
			f.pending--
		}
	}, 0
}

// keyRef names one key of one counter.
type keyRef struct {
	c   *failureCounter
	key string
}

// keysOf lists the keys of a login: the address, and the name unless it
// is empty (a name that cannot exist).
func (t *loginThrottle) keysOf(user, ip string) []keyRef {
	if user == "" {
		return []keyRef{{&t.ips, ip}}
	}
	return []keyRef{{&t.ips, ip}, {&t.users, user}}
}

// recent is f's failures that still count at now: none after a quiet
// Window (the rule record applies).
func (t *loginThrottle) recent(f *failures, now time.Time) int {
	if now.After(f.last.Add(t.limits.Window)) && now.After(f.until.Add(t.limits.Window)) {
		return 0
	}
	return f.n
}

// failed records a failed login of user from ip.
func (t *loginThrottle) failed(user, ip string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if user != "" {
		t.record(&t.users, user, now)
	}
	t.record(&t.ips, ip, now)
}

func (t *loginThrottle) record(c *failureCounter, key string, now time.Time) {
	f, ok := c.keys.Get(key)
	if !ok {
		f = &failures{}
		c.keys.Add(key, f)
	}
	f.n = t.recent(f, now) + 1 // quiet for a window: start again
	f.last = now
	if over := f.n - c.threshold; over >= 0 {
		block := t.limits.Backoff
		for range over {
			if block >= t.limits.MaxBackoff {
				break // and no overflow however long the run
			}
			block *= 2
		}
		f.until = now.Add(min(block, t.limits.MaxBackoff))
	}
}

// succeeded forgets user's failures. Not the address's: someone with one
// valid account could otherwise clear its address's count between
// guesses at other users' passwords.
func (t *loginThrottle) succeeded(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.keys.Remove(user)
}

// throttleAddr is the address key of a login from ip: the address itself,
// but for IPv6 its /64. One host is usually given a whole /64 and can send
// from any address in it; keyed by the full address, each login would be a
// new key, never blocked.
func throttleAddr(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
