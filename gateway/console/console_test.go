package console_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/scalelab/scalelab/gateway/console"
)

// get asks the console's handler for path, as the gateway routes it (the
// full path, nothing stripped).
func get(t *testing.T, method, path string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	console.Handler().ServeHTTP(rec, req)
	res := rec.Result()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// checkHeaders wants the strict headers on every answer, errors included.
func checkHeaders(t *testing.T, path string, h http.Header) {
	t.Helper()
	for k, want := range map[string]string{
		"Content-Security-Policy": console.CSP,
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-cache",
		"X-Frame-Options":         "DENY",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
		}
	}
}

// TestConsoleServesItsFiles: the page, its script and its style, each with
// its content type, the strict headers and an ETag a browser revalidates.
func TestConsoleServesItsFiles(t *testing.T) {
	for _, tt := range []struct{ path, ctype, contains string }{
		{"/console/", "text/html; charset=utf-8", "<title>scalelab · task console</title>"},
		{"/console/index.html", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/console/app.js", "text/javascript; charset=utf-8", `"use strict";`},
		{"/console/style.css", "text/css; charset=utf-8", ":root {"},
	} {
		res, body := get(t, http.MethodGet, tt.path, nil)
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", tt.path, res.StatusCode)
			continue
		}
		checkHeaders(t, tt.path, res.Header)
		if ct := res.Header.Get("Content-Type"); ct != tt.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tt.path, ct, tt.ctype)
		}
		if !strings.Contains(string(body), tt.contains) {
			t.Errorf("GET %s: body does not contain %q", tt.path, tt.contains)
		}
		etag := res.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", tt.path)
			continue
		}
		again, _ := get(t, http.MethodGet, tt.path, map[string]string{"If-None-Match": etag})
		if again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s If-None-Match %s = %d, want 304", tt.path, etag, again.StatusCode)
		}
	}
	res, body := get(t, http.MethodHead, "/console/app.js", nil)
	if res.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD /console/app.js = %d with %d bytes, want 200 and none", res.StatusCode, len(body))
	}
}

// TestConsoleUnknownPaths: anything but the three files is a 404 with the
// API's JSON error (no directory listing, no file outside static/), and
// methods other than GET and HEAD are a 405.
func TestConsoleUnknownPaths(t *testing.T) {
	for _, path := range []string{"/console/nope.js", "/console/static/app.js", "/console/../console/app.js",
		"/console/app.js/", "/console//app.js", "/consoleapp.js", "/console/%2e%2e/doc.go", "/console/doc.go"} {
		res, body := get(t, http.MethodGet, path, nil)
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, res.StatusCode)
			continue
		}
		checkHeaders(t, path, res.Header)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != "not_found" {
			t.Errorf("GET %s body %s, want a JSON not_found error (%v)", path, body, err)
		}
	}
	res, body := get(t, http.MethodPost, "/console/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" || !strings.Contains(string(body), `"unsupported"`) {
		t.Errorf("POST /console/ = %d Allow %q %s, want 405 GET, HEAD, code unsupported", res.StatusCode, res.Header.Get("Allow"), body)
	}
}

// TestConsoleNoInlineCode parses the page: the CSP forbids inline script
// and style, so the page must have none, or it would break in the browser.
// Every script and stylesheet is one of the console's own files, by a
// relative URL (the page works under any mount).
func TestConsoleNoInlineCode(t *testing.T) {
	_, body := get(t, http.MethodGet, "/console/", nil)
	doc, err := html.Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	own := map[string]bool{"app.js": true, "style.css": true}
	var scripts, sheets int
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		attr := map[string]string{}
		for _, a := range n.Attr {
			attr[a.Key] = a.Val
			if strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s %s=...>: an inline event handler", n.Data, a.Key)
			}
			if a.Key == "style" {
				t.Errorf("<%s style=...>: an inline style", n.Data)
			}
			if (a.Key == "href" || a.Key == "src" || a.Key == "action") && strings.HasPrefix(strings.TrimSpace(strings.ToLower(a.Val)), "javascript:") {
				t.Errorf("<%s %s=%q>: a javascript: URL", n.Data, a.Key, a.Val)
			}
		}
		switch n.Data {
		case "script":
			scripts++
			if !own[attr["src"]] {
				t.Errorf("<script src=%q>, want one of the console's files", attr["src"])
			}
			if n.FirstChild != nil && strings.TrimSpace(n.FirstChild.Data) != "" {
				t.Errorf("<script> with inline code %q", n.FirstChild.Data)
			}
		case "style":
			t.Errorf("an inline <style> element")
		case "link":
			if attr["rel"] == "stylesheet" {
				sheets++
				if !own[attr["href"]] {
					t.Errorf(`<link rel="stylesheet" href=%q>, want one of the console's files`, attr["href"])
				}
			}
		}
	}
	if scripts != 1 || sheets != 1 {
		t.Errorf("%d scripts and %d stylesheets, want app.js and style.css", scripts, sheets)
	}
	// The script never renders data as markup.
	_, js := get(t, http.MethodGet, "/console/app.js", nil)
	if m := regexp.MustCompile(`\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(`).Find(js); m != nil {
		t.Errorf("app.js uses %s: render data with textContent", m)
	}
}
