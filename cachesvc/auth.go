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
		claims, challenge, err := auth.Authenticate(a.verifier, r.Header.Get("Authorization"))
		if err != nil {
			w.Header().Set("WWW-Authenticate", challenge)
			a.fail(w, r, err)
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
