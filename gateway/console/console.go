package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// Prefix is the path the console is served under, with its trailing slash:
// the page links its assets relatively, which resolve under it only with
// the slash.
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every answer. default-src 'self'
// allows the page's own script, style and API calls (the API is the same
// origin) and nothing inline; the rest forbids what the page never needs:
// a <base> that would redirect its relative links, being framed (click-
// jacking the retry and delete buttons), plugins.
const CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'; form-action 'self'"

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// files are the console's files by their path under Prefix ("" is the
// page). A fixed table, not a file server: nothing else is ever served,
// and there is no directory listing.
var files = func() map[string]asset {
	m := map[string]asset{}
	for name, ct := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"app.js":     "text/javascript; charset=utf-8",
		"style.css":  "text/css; charset=utf-8",
	} {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			panic("console: embedded file missing: " + name) // caught by the package's tests
		}
		sum := sha256.Sum256(b)
		m[name] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	m[""] = m["index.html"]
	return m
}()

// Handler serves the console's files at Prefix (the request's full path:
// it expects nothing stripped). GET and HEAD only; any other path under
// Prefix is a 404 with the API's JSON error body. Every answer carries
// CSP, nosniff, no referrer (a task id in the URL stays on the page) and
// Cache-Control no-cache with an ETag, so that a browser revalidates and a
// new gateway's page is never stale.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		rid := h.Get(reqid.Header)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			apperr.WriteCode(w, http.StatusMethodNotAllowed, apperr.Unsupported, "the console only answers GET", rid)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		f, found := files[name]
		if !ok || !found {
			apperr.WriteCode(w, http.StatusNotFound, apperr.NotFound, "no such console file", rid)
			return
		}
		h.Set("Content-Type", f.contentType)
		h.Set("ETag", f.etag)
		// ServeContent answers HEAD, If-None-Match (304) and ranges.
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}
