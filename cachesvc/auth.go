package cachesvc

import (
	"net/http"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
)

// requireScope serves h only to a request whose bearer token verifies and
// grants scope: 401 with a Bearer challenge without a token or with one
// that does not verify, 403 for a token without the scope. It answers
// before h reads the body or touches the bucket, so a refused write
// changes nothing.
func (a *api) requireScope(scope string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, ok := auth.FromHeader(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scalelab"`)
			a.fail(w, r, apperr.New(apperr.Unauthorized, "missing token: send Authorization: Bearer <token>"))
			return
		}
		claims, err := a.verifier.Verify(raw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scalelab", error="invalid_token"`)
			a.fail(w, r, apperr.Wrap(err, apperr.Unauthorized, "%s", auth.Problem(err)))
			return
		}
		if !claims.HasScope(scope) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scalelab", error="insufficient_scope", scope="`+scope+`"`)
			a.fail(w, r, apperr.New(apperr.Forbidden, "token lacks the scope %q", scope))
			return
		}
		h(w, r)
	}
}
