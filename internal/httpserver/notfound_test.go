package httpserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
)

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "missing" {
			// The handler's own 404 must pass through untouched.
			http.Error(w, "no such item", http.StatusNotFound)
			return
		}
		w.Header().Set("X-Handler", "items")
		io.WriteString(w, "item "+r.PathValue("id"))
	})
	mux.HandleFunc("PUT /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("GET /dir/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "dir") })
	return mux
}

// redirect stands for any 3xx status in the table below.
const redirect = 3

func TestJSONErrors(t *testing.T) {
	t.Parallel()
	h := JSONErrors(testMux())
	tests := []struct {
		name       string
		method     string
		target     string
		requestID  string
		wantStatus int
		wantCode   apperr.Code // "" means not a house error body
		wantBody   string      // checked when wantCode is ""
		wantHeader map[string]string
	}{
		{name: "unknown path", method: "GET", target: "/nope", requestID: "req-1",
			wantStatus: http.StatusNotFound, wantCode: apperr.NotFound},
		{name: "unknown path, POST", method: "POST", target: "/nope/deeper",
			wantStatus: http.StatusNotFound, wantCode: apperr.NotFound},
		{name: "wrong method", method: "DELETE", target: "/items/7",
			wantStatus: http.StatusMethodNotAllowed, wantCode: apperr.Unsupported,
			wantHeader: map[string]string{"Allow": "GET, HEAD, PUT"}},
		{name: "wrong method on subtree", method: "POST", target: "/dir/x",
			wantStatus: http.StatusMethodNotAllowed, wantCode: apperr.Unsupported,
			wantHeader: map[string]string{"Allow": "GET, HEAD"}},
		{name: "known route", method: "GET", target: "/items/7",
			wantStatus: http.StatusOK, wantBody: "item 7",
			wantHeader: map[string]string{"X-Handler": "items"}},
		{name: "known route, other method", method: "PUT", target: "/items/7",
			wantStatus: http.StatusCreated, wantBody: ""},
		{name: "handler's own 404 passes through", method: "GET", target: "/items/missing",
			wantStatus: http.StatusNotFound, wantBody: "no such item\n"},
		// The status of the redirect depends on the Go release (301, 307).
		{name: "redirect to subtree passes through", method: "GET", target: "/dir",
			wantStatus: redirect, wantBody: "",
			wantHeader: map[string]string{"Location": "/dir/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(tt.method, tt.target, nil)
			if tt.requestID != "" {
				req.Header.Set("X-Request-ID", tt.requestID)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.wantStatus == redirect {
				if rec.Code < 300 || rec.Code > 399 {
					t.Errorf("%s %s status = %d, want a redirect", tt.method, tt.target, rec.Code)
				}
			} else if rec.Code != tt.wantStatus {
				t.Errorf("%s %s status = %d, want %d", tt.method, tt.target, rec.Code, tt.wantStatus)
			}
			for k, v := range tt.wantHeader {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s %s header %s = %q, want %q", tt.method, tt.target, k, got, v)
				}
			}
			if tt.wantCode == "" {
				if tt.wantStatus != redirect && rec.Body.String() != tt.wantBody {
					t.Errorf("%s %s body = %q, want %q", tt.method, tt.target, rec.Body, tt.wantBody)
				}
				return
			}
			if got, want := rec.Header().Get("Content-Type"), "application/json; charset=utf-8"; got != want {
				t.Errorf("%s %s Content-Type = %q, want %q", tt.method, tt.target, got, want)
			}
			var body apperr.Body
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("%s %s body is not the house error body: %v", tt.method, tt.target, err)
			}
			want := apperr.BodyError{
				Code:      tt.wantCode,
				Message:   http.StatusText(tt.wantStatus) + ": " + tt.method + " " + req.URL.Path,
				RequestID: tt.requestID,
			}
			if diff := cmp.Diff(want, body.Error); diff != "" {
				t.Errorf("%s %s error body mismatch (-want +got):\n%s", tt.method, tt.target, diff)
			}
		})
	}
}
