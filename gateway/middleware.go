package gateway

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/reqid"
)

// authedContext is the echo.Context that authenticate passes on: the
// request's context with its verified claims. (Not echo's Set, which makes
// a map for every request: 6 % of a gateway's garbage under load.)
type authedContext struct {
	echo.Context
	claims *auth.Claims
}

// claimsOf returns the claims authenticate verified, nil before it.
func claimsOf(c echo.Context) *auth.Claims {
	if a, ok := c.(*authedContext); ok {
		return a.claims
	}
	return nil
}

// servedByHeader names the gateway that answered.
const servedByHeader = "X-Served-By"

// sanitizeRequestID drops an incoming X-Request-ID that is not safe to log
// or forward, so that echo's RequestID middleware makes a new one.
func sanitizeRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		if id := h.Get(reqid.Header); id != "" && !reqid.Valid(id) {
			h.Del(reqid.Header)
		}
		return next(c)
	}
}

// requestID returns the request's id, set by echo's RequestID middleware.
func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// servedBy sets X-Served-By before the handler runs, so errors carry it too.
func servedBy(id string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set(servedByHeader, id)
			return next(c)
		}
	}
}

// authenticate verifies the bearer token (or the lab's bare token) and
// stores its claims for requireScope and handlers.
func authenticate(v *auth.Verifier) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			claims, challenge, err := auth.Authenticate(v, c.Request().Header.Get(echo.HeaderAuthorization))
			if err != nil {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
				return err
			}
			return next(&authedContext{Context: c, claims: claims})
		}
	}
}

// requireScope refuses tokens that lack scope with 403.
func requireScope(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if claims := claimsOf(c); claims == nil || !claims.HasScope(scope) {
				return apperr.New(apperr.Forbidden, "token lacks the scope %q", scope)
			}
			return next(c)
		}
	}
}

// requireBus answers 503 at once while the NATS connection is down.
func requireBus(nc *nats.Conn) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !nc.IsConnected() {
				return apperr.New(apperr.Unavailable, "message bus is not connected, try again shortly")
			}
			return next(c)
		}
	}
}

// observe records metrics and logs one line per request. Errors are logged
// by the error handler, not here, so each is logged once.
func observe(m *metrics, log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // write the error now so the status is known
			}
			route := c.Path()
			if route == "" || route == "/*" {
				route = "unmatched" // keep label cardinality bounded
			}
			status := c.Response().Status
			elapsed := time.Since(start)
			m.requests.WithLabelValues(route, c.Request().Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
			// Checked first: building the arguments allocates even when
			// debug lines are off, on every request.
			if log.Enabled(c.Request().Context(), slog.LevelDebug) {
				log.Debug("http request", "method", c.Request().Method, "path", c.Request().URL.Path,
					"status", status, "duration_ms", float64(elapsed.Microseconds())/1000, "request_id", requestID(c))
			}
			return nil
		}
	}
}

// injectLatency delays each request by d before it is handled, or until
// the client leaves (see Config.InjectLatency).
func injectLatency(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if d <= 0 {
			return next
		}
		return func(c echo.Context) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.Request().Context().Done():
			}
			return next(c)
		}
	}
}
