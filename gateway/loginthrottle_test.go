package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestLoginThrottleBackoff: past the threshold a key is blocked, each
// further failure doubles the block up to the cap, a quiet window starts
// it again, a success clears the name but not the address, and the keys
// kept are bounded.
func TestLoginThrottleBackoff(t *testing.T) {
	t.Parallel()
	l := LoginLimits{UserFailures: 3, IPFailures: 100, Window: time.Minute, Backoff: 10 * time.Second, MaxBackoff: 40 * time.Second, Keys: 50}
	th := newLoginThrottle(l)
	now := time.Unix(1000, 0)
	for i := range 2 {
		th.failed("alice", "192.0.2.1", now)
		if b, _ := th.blocked("alice", "192.0.2.1", now); b {
			t.Fatalf("blocked after %d failures, want only from the 3rd", i+1)
		}
	}
	// Each failure once the block is over: 10 s, 20 s, 40 s, 40 s (the cap).
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second, 40 * time.Second} {
		th.failed("alice", "192.0.2.1", now)
		b, wait := th.blocked("alice", "192.0.2.9", now) // from any address
		if !b || wait != want {
			t.Fatalf("after failure %d: blocked %v for %v, want %v", 3+i, b, wait, want)
		}
		if b, _ := th.blocked("bob", "192.0.2.1", now); b {
			t.Fatalf("bob blocked by alice's failures")
		}
		now = now.Add(wait)
		if b, _ := th.blocked("alice", "192.0.2.1", now); b {
			t.Fatalf("alice still blocked when the block is over")
		}
	}
	// A window of quiet after the block: from zero again.
	now = now.Add(l.Window + time.Second)
	th.failed("alice", "192.0.2.1", now)
	if b, _ := th.blocked("alice", "192.0.2.1", now); b {
		t.Errorf("blocked by one failure after a quiet window")
	}
	// A success clears the name's count.
	th.failed("alice", "192.0.2.1", now)
	th.succeeded("alice")
	th.failed("alice", "192.0.2.1", now)
	th.failed("alice", "192.0.2.1", now)
	if b, _ := th.blocked("alice", "192.0.2.1", now); b {
		t.Errorf("blocked after 2 failures following a success, want the count cleared")
	}

	// The address: IPFailures failures of any names, and a success does
	// not clear it.
	ipOnly := newLoginThrottle(LoginLimits{UserFailures: 100, IPFailures: 4, Window: time.Minute, Backoff: time.Second, MaxBackoff: time.Second, Keys: 50})
	for i := range 4 {
		ipOnly.failed(fmt.Sprintf("user%d", i), "198.51.100.1", now)
		ipOnly.succeeded("mallory")
	}
	if b, _ := ipOnly.blocked("alice", "198.51.100.1", now); !b {
		t.Errorf("address not blocked after 4 failures over 4 names")
	}
	if b, _ := ipOnly.blocked("alice", "198.51.100.2", now); b {
		t.Errorf("another address blocked")
	}

	// A flood of made-up names from made-up addresses keeps at most Keys
	// of each.
	for i := range 1000 {
		th.failed(fmt.Sprintf("u%d", i), fmt.Sprintf("10.0.%d.%d", i/256, i%256), now)
	}
	if n, m := th.users.keys.Len(), th.ips.keys.Len(); n > l.Keys || m > l.Keys {
		t.Errorf("after 1000 names: %d names and %d addresses kept, want at most %d each", n, m, l.Keys)
	}
}

// countingUsers is a UserStore that counts its lookups and knows one
// user.
type countingUsers struct {
	calls atomic.Int64
	user  dbsvc.User
}

func (s *countingUsers) GetUser(_ context.Context, _, name string) (dbsvc.User, error) {
	s.calls.Add(1)
	if name == s.user.Name {
		return s.user, nil
	}
	return dbsvc.User{}, dbsvc.ErrNotFound
}

// TestLoginThrottledBeforeWork: a blocked login is answered 429 without a
// database lookup and without a bcrypt slot: with every slot held, it is
// still a 429 and not a 503.
func TestLoginThrottledBeforeWork(t *testing.T) {
	t.Parallel()
	users := &countingUsers{user: dbsvc.User{Name: "alice", PasswordHash: dummyHash, Scopes: []string{auth.ScopeDataRead}}}
	slots := &bcryptSlots{slots: make(chan struct{}, 1), waiting: make(chan struct{}, 1), wait: 20 * time.Millisecond}
	throttle := newLoginThrottle(LoginLimits{UserFailures: 2, IPFailures: 100, Window: time.Minute, Backoff: time.Minute, MaxBackoff: time.Hour, Keys: 10})
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(testutil.QuietLog())
	e.POST("/auth/token", issueToken(users, testKeys, time.Hour, dummyHash, slots, throttle, testutil.QuietLog()))
	post := func(user string) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/auth/token",
			strings.NewReader(`{"username":"`+user+`","password":"wrong password"}`))
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}
	for i := range 2 {
		if rec := post("alice"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d = %d %s, want 401", i+1, rec.Code, rec.Body)
		}
	}
	before := users.calls.Load()
	slots.slots <- struct{}{} // no bcrypt slot left
	rec := post("alice")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), `"code":"rate_limited"`) {
		t.Fatalf("3rd login of alice with every slot held = %d %s, want 429 rate_limited", rec.Code, rec.Body)
	}
	if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 59 || s > 60 {
		t.Errorf("Retry-After = %q, want 60 (the first back-off)", rec.Header().Get("Retry-After"))
	}
	if n := users.calls.Load() - before; n != 0 {
		t.Errorf("a throttled login looked the user up %d times, want 0", n)
	}
	// Another name is not blocked by alice's failures: it reaches the
	// slots (and, all held, gets 503).
	if rec := post("bob"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("login of bob with every slot held = %d %s, want 503", rec.Code, rec.Body)
	}
	// An unknown name is throttled like a known one, so a 429 does not
	// say whether the name exists.
	<-slots.slots
	for i := range 2 {
		if rec := post("nobody"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d of an unknown name = %d %s, want 401", i+1, rec.Code, rec.Body)
		}
	}
	if rec := post("nobody"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("3rd login of an unknown name = %d %s, want 429 as for alice", rec.Code, rec.Body)
	}
}

// TestBcryptWaitersBounded: with every slot held and the waiting room
// full, a login is turned away at once, not after the wait.
func TestBcryptWaitersBounded(t *testing.T) {
	t.Parallel()
	b := &bcryptSlots{slots: make(chan struct{}, 1), waiting: make(chan struct{}, 2), wait: time.Hour}
	b.slots <- struct{}{}
	b.waiting <- struct{}{}
	b.waiting <- struct{}{}
	done := make(chan bool)
	go func() { done <- b.acquire(t.Context()) }()
	select {
	case ok := <-done:
		if ok {
			t.Errorf("acquire with every slot and waiting place taken = true, want false")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("acquire with the waiting room full waited, want an answer at once")
	}
	// The gateway's own: bcrypt on at most half the cores (at least one),
	// and a bounded waiting room.
	def := newBcryptSlots(0, nil)
	if got, want := cap(def.slots), max(1, runtime.GOMAXPROCS(0)/2); got != want || cap(def.waiting) != 4*want {
		t.Errorf("newBcryptSlots(0) = %d slots, %d waiting, want %d and %d", got, cap(def.waiting), want, 4*want)
	}
	// A command's count (Config.BcryptSlots), set from the cores before it
	// raised GOMAXPROCS, is taken as it is.
	set := newBcryptSlots(3, nil)
	if cap(set.slots) != 3 || cap(set.waiting) != 12 {
		t.Errorf("newBcryptSlots(3) = %d slots, %d waiting, want 3 and 12", cap(set.slots), cap(set.waiting))
	}
	for procs, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 16: 8} {
		if got := DefaultBcryptSlots(procs); got != want {
			t.Errorf("DefaultBcryptSlots(%d) = %d, want %d", procs, got, want)
		}
	}
}

// TestLoginThrottleHTTP attacks POST /auth/token of a real gateway and
// dbsvc, behind a trusted proxy (the test's loopback address) that
// forwards each attacker's address: the default five wrong passwords for
// one name block it from every address, even with the right password,
// with 429 and Retry-After; failures from one address over many names (a
// password spray) block that address for every name; other names and
// addresses are untouched; a success clears the name's count. Every user
// exists, with the cheapest bcrypt cost, so that no compare is at the
// dummy hash's real cost (seconds each under -race).
func TestLoginThrottleHTTP(t *testing.T) {
	t.Parallel()
	st := startStack(t, 100)
	db := dbsvc.NewClient(testutil.Connect(t, st.ns))
	const sprayFailures = 6
	base := startGateway(t, testutil.Connect(t, st.ns), func(c *Config) {
		c.TrustedProxies = LoopbackProxies()
		c.Logins.IPFailures = sprayFailures // the default 20 costs 20 puts below
	})
	putUser(t, db, "alice", "correct horse battery", auth.ScopeDataRead)
	putUser(t, db, "bob", "correct horse battery", auth.ScopeDataRead)
	for i := range sprayFailures {
		putUser(t, db, fmt.Sprintf("spray%d", i), "correct horse battery", auth.ScopeDataRead)
	}
	from := func(ip, user, password string) result {
		t.Helper()
		body := fmt.Sprintf(`{"username":%q,"password":%q}`, user, password)
		return send(t, http.MethodPost, base+"/auth/token", "", body, map[string]string{"X-Forwarded-For": ip})
	}
	want429 := func(r result, what string) {
		t.Helper()
		if r.status != http.StatusTooManyRequests || errorCode(t, r) != "rate_limited" {
			t.Fatalf("%s = %d %s, want 429 rate_limited", what, r.status, r.body)
		}
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("%s: Retry-After = %q, want whole seconds >= 1", what, r.header.Get("Retry-After"))
		}
	}

	// A success clears the name's count: 4 failures, a success, 4 more,
	// no block (each from its own address, whose counts are not cleared).
	for i := range 4 {
		from(fmt.Sprintf("203.0.113.%d", i+1), "bob", "wrong")
	}
	issued(t, from("203.0.113.1", "bob", "correct horse battery"))
	for i := range 4 {
		if r := from(fmt.Sprintf("203.0.113.%d", i+11), "bob", "wrong"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d after bob's success = %d, want 401", i+1, r.status)
		}
	}

	// Five failures of alice, each from another address.
	for i := range 5 {
		if r := from(fmt.Sprintf("198.51.100.%d", i+1), "alice", "wrong"); r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d of alice = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	want429(from("198.51.100.99", "alice", "wrong"), "6th login of alice")
	want429(from("192.0.2.77", "alice", "correct horse battery"), "alice's right password while blocked")
	issued(t, from("192.0.2.77", "bob", "correct horse battery"))

	// Failures from one address over as many names (a password spray):
	// the address is blocked, for bob's right password too.
	for i := range sprayFailures {
		if r := from("203.0.113.66", fmt.Sprintf("spray%d", i), "Summer2025!"); r.status != http.StatusUnauthorized {
			t.Fatalf("spray %d = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	want429(from("203.0.113.66", "bob", "correct horse battery"), "bob's login from the sprayer's address")
	issued(t, from("203.0.113.67", "bob", "correct horse battery"))
}

// TestLoginThrottleCountsGuessesInFlight: guesses sent at once cannot all
// pass the check before the first of them is recorded as a failure: with
// UserFailures in flight for a name, the next is refused (and so is
// everything once they have failed), and a login that ends without a
// verdict gives its place back.
func TestLoginThrottleCountsGuessesInFlight(t *testing.T) {
	t.Parallel()
	l := LoginLimits{UserFailures: 3, IPFailures: 100, Window: time.Minute, Backoff: 10 * time.Second, MaxBackoff: 40 * time.Second, Keys: 50}
	th := newLoginThrottle(l)
	now := time.Unix(1000, 0)
	var releases []func()
	for i := range 3 {
		release, wait := th.begin("alice", fmt.Sprintf("192.0.2.%d", i+1), now)
		if release == nil {
			t.Fatalf("guess %d in flight refused (wait %v), want the first %d let through", i+1, wait, l.UserFailures)
		}
		releases = append(releases, release)
	}
	if release, wait := th.begin("alice", "192.0.2.9", now); release != nil || wait != pendingRetry {
		t.Fatalf("a 4th guess while 3 are in flight: let through %v, wait %v; want refused for %v", release != nil, wait, pendingRetry)
	}
	if release, _ := th.begin("bob", "192.0.2.9", now); release == nil {
		t.Fatal("bob refused because of alice's guesses")
	} else {
		release()
	}
	// One ends without a verdict (say dbsvc was down): its place is free.
	releases[0]()
	releases[0]() // twice is harmless
	release, _ := th.begin("alice", "192.0.2.9", now)
	if release == nil {
		t.Fatal("a guess refused after one in flight was released without a verdict")
	}
	releases[0] = release
	// All three fail: the name is blocked, whatever is in flight.
	for _, release := range releases {
		th.failed("alice", "192.0.2.1", now)
		release()
	}
	if release, wait := th.begin("alice", "192.0.2.9", now); release != nil || wait != l.Backoff {
		t.Fatalf("after 3 failures: let through %v, wait %v; want refused for %v", release != nil, wait, l.Backoff)
	}
}

// TestThrottleAddr: an IPv6 client is counted by its /64, which one host
// usually holds whole; IPv4 and IPv4-mapped addresses by the address.
func TestThrottleAddr(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"2001:db8:1:2:aaaa::1":  "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::99": "2001:db8:1:2::/64",
		"2001:db8:1:3::1":       "2001:db8:1:3::/64",
		"192.0.2.7":             "192.0.2.7",
		"::ffff:192.0.2.7":      "::ffff:192.0.2.7",
		"not an address":        "not an address",
	} {
		if got := throttleAddr(in); got != want {
			t.Errorf("throttleAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLoginThrottleConcurrentGuessesHTTP: 30 wrong passwords for one name
// sent at once, each from its own address, to a gateway with room for
// all of them at bcrypt (8 slots, 32 waiting): at most UserFailures are
// compared (401); the rest are refused, 429 before any work (or 503 when
// the bcrypt queue is full). Counted only once recorded, every guess in
// flight would have been compared.
func TestLoginThrottleConcurrentGuessesHTTP(t *testing.T) {
	t.Parallel()
	st := startStack(t, 100)
	db := dbsvc.NewClient(testutil.Connect(t, st.ns))
	base := startGateway(t, testutil.Connect(t, st.ns), func(c *Config) {
		c.TrustedProxies = LoopbackProxies()
		c.BcryptSlots = 8
	})
	putUser(t, db, "carol", "correct horse battery", auth.ScopeDataRead)
	const guesses = 30
	client := &http.Client{Timeout: time.Minute}
	statuses := make(chan int, guesses)
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/auth/token",
				strings.NewReader(`{"username":"carol","password":"wrong"}`))
			req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i+1))
			res, err := client.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			res.Body.Close()
			statuses <- res.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts[http.StatusUnauthorized] > DefaultLoginLimits().UserFailures {
		t.Errorf("%d of %d guesses sent at once were compared (401), want at most %d; statuses %v",
			counts[http.StatusUnauthorized], guesses, DefaultLoginLimits().UserFailures, counts)
	}
	if counts[http.StatusTooManyRequests] == 0 || counts[http.StatusUnauthorized]+counts[http.StatusTooManyRequests]+counts[http.StatusServiceUnavailable] != guesses {
		t.Errorf("statuses %v, want only 401, 429 and 503, with some 429", counts)
	}
}
