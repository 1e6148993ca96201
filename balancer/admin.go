package balancer

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// Status is a snapshot of the balancer: what GET /-/balancer answers, and
// what a Dashboard reads.
type Status struct {
	// Policy is --policy; Discover is --discover, when set.
	Policy   string `json:"policy"`
	Discover string `json:"discover,omitempty"`
	// Ready is how many gateways get new requests.
	Ready int `json:"ready"`
	// Backends are every gateway, ready or not, in pool order.
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one gateway in a Status and in the answers of the admin
// routes. Requests and Errors count attempts since the balancer started
// (a gateway that discovery drops and finds again starts from zero).
type BackendStatus struct {
	URL      string  `json:"url"`
	State    string  `json:"state"`
	Weight   int     `json:"weight"`
	InFlight int64   `json:"in_flight"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

// statusOf reads b's state and counters, all atomics, at now.
func statusOf(b *backend, now time.Time) BackendStatus {
	q := b.latency.quantiles(now, 0.50, 0.99)
	return BackendStatus{
		URL:      b.label,
		State:    b.state(),
		Weight:   int(b.weight.Load()),
		InFlight: b.inFlight.Load(),
		Requests: b.requests.Load(),
		Errors:   b.errors.Load(),
		P50Ms:    float64(q[0].Microseconds()) / 1000,
		P99Ms:    float64(q[1].Microseconds()) / 1000,
	}
}

// status reads the policy, how the gateways are found, and each gateway's
// state and counters. It holds the pool's lock while it reads them: a
// state change stores the gateway's flag and then publishes the ready set
// under that lock, so a caller that sees a gateway unhealthy (or drained,
// or ejected) knows that no new request goes to it. Only state changes
// take the lock, never a request, so it stays cheap enough to poll.
func (b *balancer) status() Status {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	all := *b.pool.all.Load()
	s := Status{
		Policy:   b.pool.ready.Load().policy.name(),
		Discover: b.cfg.Discover,
		Ready:    len(b.pool.ready.Load().backends),
		Backends: make([]BackendStatus, 0, len(all)),
	}
	now := time.Now()
	for _, be := range all {
		s.Backends = append(s.Backends, statusOf(be, now))
	}
	return s
}

// handleStatus serves GET /-/balancer: the balancer's Status.
func (b *balancer) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, b.status())
}

// handleDrain returns the handler of POST /-/backends/drain?url=<backend>
// (draining true) and POST /-/backends/undrain?url=<backend>. A drained
// gateway gets no new requests; the ones in flight finish, and its state
// and in_flight in the answer (and in GET /-/balancer) show when it is
// idle. Draining sticks while discovery keeps finding the gateway. The
// answer is 200 with the gateway's status, 400 invalid without a usable
// url, 404 not_found for a URL that is not a current gateway.
//
// These routes are served on the admin listener only, where adminGuard
// lets through only requests with a token of scope admin, under the
// listener's own Host and not from another site; --admin=false removes
// them.
func (b *balancer) handleDrain(draining bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := reqid.Or(r.Header.Get(reqid.Header))
		raw := r.URL.Query().Get("url")
		if raw == "" {
			apperr.WriteCode(w, http.StatusBadRequest, apperr.Invalid, "the url query parameter is required", id)
			return
		}
		u, err := parseBackend(raw)
		if err != nil {
			apperr.WriteCode(w, http.StatusBadRequest, apperr.Invalid, err.Error(), id)
			return
		}
		be := b.pool.byLabel(u.String())
		if be == nil {
			apperr.WriteCode(w, http.StatusNotFound, apperr.NotFound, "no gateway "+u.String(), id)
			return
		}
		if b.pool.setDraining(be, draining) {
			verb := "backend undrained"
			if draining {
				verb = "backend draining"
			}
			b.log.Info(verb, "upstream", be.label, "in_flight", be.inFlight.Load(), "request_id", id)
		}
		writeJSON(w, http.StatusOK, statusOf(be, time.Now()))
	}
}

// writeJSON writes v as an uncached JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
