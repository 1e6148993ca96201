package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	gnetlog "github.com/panjf2000/gnet/v2/pkg/logging"
	"github.com/valyala/fasthttp"
)

// The adapter is each library's logger type: a change of their interfaces
// fails the build here, not in the roles.
var (
	_ server.Logger   = Printf{}
	_ gnetlog.Logger  = Printf{}
	_ fasthttp.Logger = Printf{}
)

// TestPrintfLevels: every method logs its formatted line once, at its
// level, and Fatalf does not end the process.
func TestPrintfLevels(t *testing.T) {
	for _, tt := range []struct {
		name string
		log  func(Printf, string, ...any)
		want string
	}{
		{"Debugf", Printf.Debugf, "DEBUG"}, {"Tracef", Printf.Tracef, "DEBUG"},
		{"Infof", Printf.Infof, "DEBUG"}, {"Noticef", Printf.Noticef, "DEBUG"},
		{"Warnf", Printf.Warnf, "WARN"}, {"Printf", Printf.Printf, "WARN"},
		{"Errorf", Printf.Errorf, "ERROR"}, {"Fatalf", Printf.Fatalf, "ERROR"},
	} {
		var buf bytes.Buffer
		p := Printf{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		tt.log(p, "port %d: %s", 8000, "busy")
		line := buf.String()
		if strings.Count(line, "\n") != 1 || !strings.Contains(line, "level="+tt.want) || !strings.Contains(line, `msg="port 8000: busy"`) {
			t.Errorf("%s logged %q, want one line at %s with the formatted message", tt.name, line, tt.want)
		}
	}
}
