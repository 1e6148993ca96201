package gateway

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
)

// errorHandler is echo's HTTPErrorHandler: every error, ours or echo's,
// leaves as {"error":{"code","message","request_id"}} with the code's
// status. Internal and unavailable errors are logged here, once, in full.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var he *echo.HTTPError
		if errors.As(err, &he) {
			// echo's own errors: 404, 405, 413 from the body limit, ...
			code := apperr.CodeForStatus(he.Code)
			msg := http.StatusText(he.Code)
			if code == apperr.TooLarge {
				msg = "request body is too large"
			}
			err = apperr.Wrap(err, code, "%s", msg)
		}
		code := apperr.CodeOf(err)
		// A default, unless whoever refused knows better (the rate limits
		// and the login throttle say how long).
		if c.Response().Header().Get("Retry-After") == "" {
			switch code {
			case apperr.RateLimited, apperr.Unavailable:
				c.Response().Header().Set("Retry-After", "1")
			case apperr.StoreFull:
				c.Response().Header().Set("Retry-After", storeFullRetryAfter)
			}
		}
		// The index loading at start is expected, and logged once when it
		// is done (taskindex.go): not an error per request.
		if (code == apperr.Internal || code == apperr.Unavailable || code == apperr.StoreFull) && !errors.Is(err, errIndexLoading) {
			log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path,
				"code", code, "request_id", requestID(c), "err", err)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(apperr.Status(code))
			return
		}
		apperr.WriteHTTP(c.Response(), err, requestID(c))
	}
}

// storeFullRetryAfter is the Retry-After of a write refused for want of
// space (store_full): space comes back when tasks finish and expire or an
// operator frees the disk, not within the second of a blip.
const storeFullRetryAfter = "5"
