package cli

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProbe checks the health-check command of the FROM scratch images: a
// 2xx passes, anything else (another status, nothing listening, a bad
// argument) fails, and bad arguments are usage errors (exit 2).
func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	tests := []struct {
		name      string
		args      []string
		wantErr   bool
		wantUsage bool
	}{
		{name: "2xx passes", args: []string{srv.URL + "/readyz"}},
		{name: "5xx fails", args: []string{srv.URL + "/other"}, wantErr: true},
		{name: "nothing listening fails", args: []string{"--timeout", "1s", dead.URL + "/readyz"}, wantErr: true},
		{name: "no URL", args: nil, wantErr: true, wantUsage: true},
		{name: "two URLs", args: []string{srv.URL, srv.URL}, wantErr: true, wantUsage: true},
		{name: "not http", args: []string{"ftp://example.com/"}, wantErr: true, wantUsage: true},
		{name: "bad timeout", args: []string{"--timeout", "0s", srv.URL}, wantErr: true, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout strings.Builder
			err := run(t.Context(), append([]string{"probe"}, tt.args...), func(string) string { return "" }, &stdout, io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run(probe %q) = %v, want error %v", tt.args, err, tt.wantErr)
			}
			if got := errors.Is(err, ErrUsage); got != tt.wantUsage {
				t.Errorf("run(probe %q) = %v, usage error %v, want %v", tt.args, err, got, tt.wantUsage)
			}
			if !tt.wantErr && !strings.HasPrefix(stdout.String(), "200") {
				t.Errorf("stdout = %q, want the status 200 OK", stdout.String())
			}
		})
	}
}
