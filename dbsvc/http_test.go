package dbsvc

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

func TestRunServesHTTP(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	client := &http.Client{Timeout: 10 * time.Second}

	tests := []struct {
		method, path string
		wantStatus   int
		wantCode     apperr.Code // for errors
		wantBody     string      // a substring, for successes
	}{
		{"GET", "/db", http.StatusOK, "", `"message":"Fetched fresh data from DB"`},
		{"GET", "/items/1", http.StatusOK, "", `"id":1,`},
		{"GET", "/items", http.StatusOK, "", `{"items":[{"id":1,`},
		{"GET", "/items?after_id=5&limit=2", http.StatusOK, "", `"next_after_id":7}`},
		{"GET", "/items?after_id=&limit=", http.StatusOK, "", `{"items":[{"id":1,`},
		{"GET", "/items?after_id=1000", http.StatusOK, "", `{"items":[]}`},
		{"GET", "/items?after_id=-1", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items?after_id=x", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items?limit=0", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items?limit=101", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items?limit=ten", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items/abc", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items/0", http.StatusBadRequest, apperr.Invalid, ""},
		{"GET", "/items/99999", http.StatusNotFound, apperr.NotFound, ""},
		{"GET", "/nope", http.StatusNotFound, apperr.NotFound, ""},
		{"GET", "/items/", http.StatusNotFound, apperr.NotFound, ""},
		{"POST", "/db", http.StatusMethodNotAllowed, apperr.Unsupported, ""},
		{"DELETE", "/items/1", http.StatusMethodNotAllowed, apperr.Unsupported, ""},
		{"GET", "/healthz", http.StatusOK, "", `"ok"`},
		{"GET", "/readyz", http.StatusOK, "", `"ready"`},
		{"GET", "/metrics", http.StatusOK, "", `scalelab_db_queries_total{query="data"}`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, db.url+tt.path, nil)
			if err != nil {
				t.Fatalf("http.NewRequest() = %v", err)
			}
			req.Header.Set(reqid.Header, "rid-http")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s = %v", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("%s %s status = %d, want %d; body %s", tt.method, tt.path, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantCode == "" {
				if !strings.Contains(string(body), tt.wantBody) {
					t.Errorf("%s %s body = %s, want it to contain %s", tt.method, tt.path, body, tt.wantBody)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s Content-Type = %q, want application/json", tt.method, tt.path, ct)
			}
			var got apperr.Body
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("%s %s body %s: %v", tt.method, tt.path, body, err)
			}
			if got.Error.Code != tt.wantCode || got.Error.Message == "" || got.Error.RequestID != "rid-http" {
				t.Errorf("%s %s error = %+v, want code %s, a message and request id rid-http", tt.method, tt.path, got.Error, tt.wantCode)
			}
		})
	}
}

func TestHTTPReportMatchesNATS(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	client := &http.Client{Timeout: 10 * time.Second}

	req, err := http.NewRequestWithContext(t.Context(), "GET", db.url+"/db", nil)
	if err != nil {
		t.Fatalf("http.NewRequest() = %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /db = %v", err)
	}
	defer resp.Body.Close()
	var fromHTTP Report
	if err := json.NewDecoder(resp.Body).Decode(&fromHTTP); err != nil {
		t.Fatalf("decode GET /db: %v", err)
	}
	raw, err := db.client.Data(t.Context(), "")
	if err != nil {
		t.Fatalf("Data() = %v", err)
	}
	var fromNATS Report
	if err := json.Unmarshal(raw, &fromNATS); err != nil {
		t.Fatalf("decode Data(): %v", err)
	}
	if diff := cmp.Diff(fromNATS, fromHTTP, volatile); diff != "" {
		t.Errorf("GET /db and Data() differ (-nats +http):\n%s", diff)
	}
}

func TestHTTPItemsMatchesNATS(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	client := &http.Client{Timeout: 10 * time.Second}

	body, err := getBody(t.Context(), client, db.url+"/items?after_id=10&limit=5")
	if err != nil {
		t.Fatalf("GET /items = %v", err)
	}
	var fromHTTP ItemPage
	if err := json.Unmarshal([]byte(body), &fromHTTP); err != nil {
		t.Fatalf("decode GET /items: %v; body %s", err, body)
	}
	fromNATS, err := db.client.ListItems(t.Context(), "", 10, 5)
	if err != nil {
		t.Fatalf("ListItems(10, 5) = %v", err)
	}
	if diff := cmp.Diff(fromNATS, fromHTTP); diff != "" {
		t.Errorf("GET /items and ListItems() differ (-nats +http):\n%s", diff)
	}
	if len(fromHTTP.Items) != 5 || fromHTTP.Items[0].ID != 11 || fromHTTP.NextAfterID != 15 {
		t.Errorf("GET /items?after_id=10&limit=5 = %+v, want items 11..15 and next_after_id 15", fromHTTP)
	}
}
