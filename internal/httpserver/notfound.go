package httpserver

import (
	"net/http"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// JSONErrors wraps mux so that its own answers for unknown paths (404) and
// wrong methods (405) use the house JSON error body instead of plain text.
func JSONErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// Let the mux decide between 404 and 405 (and set Allow), then
		// replace its text body with ours.
		rec := &statusRecorder{header: w.Header()}
		h.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 || status < 400 {
			// Not an error (e.g. a redirect to a cleaned path): pass it on.
			mux.ServeHTTP(w, r)
			return
		}
		code := apperr.CodeForStatus(status)
		apperr.WriteCode(w, status, code, http.StatusText(status)+": "+r.Method+" "+r.URL.Path, r.Header.Get(reqid.Header))
	})
}

// statusRecorder keeps the status and headers a handler sets and drops its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
}
