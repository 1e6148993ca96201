package dashboard

import (
	"context"
	"io/fs"
	"net/http"
	"time"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/internal/apperr"
)

// firstSampleWait bounds how long GET /state waits for the first sample
// of a dashboard that has just started.
const firstSampleWait = 3 * time.Second

// Handler returns the dashboard's routes (see the package doc), which
// expect their mount point stripped; status reads the balancer. It
// implements balancer.Dashboard with Run.
func (d *Dashboard) Handler(status func() balancer.Status) http.Handler {
	d.status.Store(&status)
	files, _ := fs.Sub(static, "static") // a constant path: cannot fail
	assets := http.FileServerFS(files)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", d.handleState)
	mux.HandleFunc("GET /events", d.handleEvents)
	mux.Handle("GET /", assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			apperr.WriteCode(w, http.StatusMethodNotAllowed, apperr.Invalid, "the dashboard only answers GET", "")
			return
		}
		if r.URL.Path == "" {
			// The page links its assets relatively ("app.js", "events"),
			// which resolve under the mount only with a trailing slash.
			// Not http.Redirect: it would resolve the relative target
			// against the stripped path, not the one the client sent.
			w.Header().Set("Location", mountBase(r)+"/")
			w.WriteHeader(http.StatusFound)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// mountBase returns the last segment of the path the client asked for
// (the mount point, e.g. "dashboard"), for a relative redirect that works
// wherever the dashboard is mounted.
func mountBase(r *http.Request) string {
	p := r.RequestURI
	for i := 0; i < len(p); i++ {
		if p[i] == '?' {
			p = p[:i]
			break
		}
	}
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// handleState serves GET /state: the latest sample.
func (d *Dashboard) handleState(w http.ResponseWriter, r *http.Request) {
	snap, changed := d.current()
	if snap == nil {
		ctx, cancel := context.WithTimeout(r.Context(), firstSampleWait)
		defer cancel()
		select {
		case <-changed:
			snap, _ = d.current()
		case <-ctx.Done():
			apperr.WriteCode(w, http.StatusServiceUnavailable, apperr.Unavailable, "the dashboard has no sample yet", "")
			return
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(snap)
}

// handleEvents serves GET /events: every sample as a server-sent event,
// the latest at once. It ends when the client goes (a write fails) or the
// balancer shuts down (the request's context).
func (d *Dashboard) handleEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		apperr.WriteCode(w, http.StatusInternalServerError, apperr.Internal, "streaming is not supported here", "")
		return
	}
	if d.viewers.Add(1) > int32(d.cfg.MaxViewers) {
		d.viewers.Add(-1)
		w.Header().Set("Retry-After", "10")
		apperr.WriteCode(w, http.StatusServiceUnavailable, apperr.Unavailable, "too many dashboards open", "")
		return
	}
	defer d.viewers.Add(-1)
	w.Header().Set("Content-Type", "text/event-stream")
	// Proxies in front of the balancer must not buffer the stream.
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// EventSource reconnects by itself; ask it to wait 2 s, not 3.
	if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	flusher.Flush()
	snap, changed := d.current()
	for {
		if snap != nil {
			if !writeEvent(w, snap) {
				return
			}
			flusher.Flush()
		}
		select {
		case <-changed:
			snap, changed = d.current()
		case <-r.Context().Done():
			return
		}
	}
}

// writeEvent writes one event; false means the client has gone.
func writeEvent(w http.ResponseWriter, data []byte) bool {
	// data is one line of JSON: json.Marshal escapes newlines in strings.
	buf := make([]byte, 0, len(data)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	buf = append(buf, '\n', '\n')
	_, err := w.Write(buf)
	return err == nil
}
