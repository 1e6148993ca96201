package balancer

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/reqid"
)

// The admin listener (Config.AdminAddr, 127.0.0.1:8001 by default) serves
// every /-/ route: the reads (GET /-/balancer, /-/metrics, /-/dashboard)
// and the routes that change what the balancer does (drain, undrain). It is
// a listener of its own so that the public port, which anyone who can reach
// the platform reaches, serves only proxied traffic (and /-/healthz and
// /-/readyz, which say nothing but ok or not).
//
// On it, in this order (see adminGuard):
//
//   - every request whose Host is not one of the listener's own names
//     (hostsOf) is refused with 421: a web page that rebinds its own DNS
//     name to 127.0.0.1 reaches the listener under that name, and could
//     otherwise read the state and the dashboard, or post a drain;
//   - reads (GET, HEAD) are served without a token;
//   - anything else is refused with 403 when it comes from another site
//     (an Origin that is not the listener's own, or Sec-Fetch-Site other
//     than same-origin or none): a body-less POST from a web page needs no
//     CORS preflight, so a browser would send it;
//   - and then needs Authorization: Bearer <jwt> with scope admin, verified
//     as the gateways verify tokens (internal/auth, Config.JWT): 401
//     without a token or with one that does not verify, 403 without the
//     scope. Without keys (Config.JWT empty) such requests are refused
//     (403), never let through.

// adminGuard wraps the admin listener's handler h with the checks above.
// hosts are the accepted Host values, lower case (hostsOf); v verifies
// tokens and is nil when no keys are configured.
func adminGuard(h http.Handler, hosts map[string]bool, v *auth.Verifier, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := reqid.Or(r.Header.Get(reqid.Header))
		host := strings.ToLower(r.Host)
		if !hosts[host] {
			log.Warn("admin request refused: foreign Host", "host", r.Host, "path", r.URL.Path, "remote", r.RemoteAddr, "request_id", id)
			apperr.WriteCode(w, http.StatusMisdirectedRequest, apperr.Forbidden,
				"this admin listener does not answer for Host "+quoteHost(r.Host)+": reach it as 127.0.0.1, localhost or [::1] with its port", id)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		if msg := crossSite(r, host); msg != "" {
			log.Warn("admin request refused: cross-site", "origin", r.Header.Get("Origin"),
				"sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "path", r.URL.Path, "remote", r.RemoteAddr, "request_id", id)
			apperr.WriteCode(w, http.StatusForbidden, apperr.Forbidden, msg, id)
			return
		}
		if v == nil {
			apperr.WriteCode(w, http.StatusForbidden, apperr.Forbidden,
				"no JWT keys are configured on the balancer ("+auth.EnvSecret+"), so its state-changing routes are off", id)
			return
		}
		claims, challenge, err := auth.Authenticate(v, r.Header.Get("Authorization"))
		if err != nil {
			log.Warn("admin request refused: bad token", "err", err, "path", r.URL.Path, "remote", r.RemoteAddr, "request_id", id)
			w.Header().Set("WWW-Authenticate", challenge)
			apperr.WriteHTTP(w, err, id)
			return
		}
		if !claims.HasScope(auth.ScopeAdmin) {
			apperr.WriteCode(w, http.StatusForbidden, apperr.Forbidden, "the token lacks the scope "+auth.ScopeAdmin, id)
			return
		}
		log.Info("admin request", "method", r.Method, "path", r.URL.Path, "sub", claims.Subject, "request_id", id)
		h.ServeHTTP(w, r)
	})
}

// crossSite returns why r, whose Host is host (checked), comes from
// another site, or "" when it does not. A request without Origin and
// Sec-Fetch-Site (curl, scripts) is not cross-site: a browser sends at
// least Origin on a POST.
func crossSite(r *http.Request, host string) string {
	if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+host) {
		return "cross-site request refused: Origin " + o + " is not this listener's"
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
		return ""
	default:
		return "cross-site request refused: Sec-Fetch-Site is " + site
	}
}

// quoteHost quotes a Host for an error message, cut short: it comes from
// the client.
func quoteHost(h string) string {
	if len(h) > 64 {
		h = h[:64] + "..."
	}
	return `"` + strings.ToValidUTF8(h, "?") + `"`
}

// hostsOf returns the Host values a client of the listener at addr may
// send, lower case: localhost, 127.0.0.1 and [::1], the address it is bound
// to when it is not a wildcard one, and the host of configured (--admin-addr)
// when that names one, each with addr's port (and bare too, on port 80,
// which clients leave out); and extra (--admin-hosts) as they are.
func hostsOf(addr net.Addr, configured string, extra []string) map[string]bool {
	bound, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return map[string]bool{}
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if ip := net.ParseIP(bound); ip != nil && !ip.IsUnspecified() {
		names = append(names, bound)
	}
	if h, _, err := net.SplitHostPort(configured); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			names = append(names, h)
		}
	}
	hosts := make(map[string]bool, 2*len(names)+len(extra))
	for _, h := range extra {
		hosts[strings.ToLower(h)] = true
	}
	for _, n := range names {
		n = strings.ToLower(n)
		hosts[net.JoinHostPort(n, port)] = true
		if port == "80" {
			if strings.Contains(n, ":") {
				n = "[" + n + "]"
			}
			hosts[n] = true
		}
	}
	return hosts
}

// untilShutdown gives each request to h a context that also ends when the
// balancer's shutdown starts (opsCtx), so that the dashboard's event
// streams end then and the admin listener's shutdown does not wait for
// them until its deadline.
func (b *balancer) untilShutdown(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(b.opsCtx, cancel)
		defer stop()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
