package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"
)

// Log formats accepted by newLogger.
const (
	logFormatText = "text"
	logFormatJSON = "json"
	logFormatAuto = "" // text on a terminal, JSON otherwise
)

// newLogger returns a logger writing to w in the given format. An empty format
// picks text when w is a terminal and JSON otherwise (containers, files, CI).
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	if format == logFormatAuto {
		format = logFormatJSON
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = logFormatText
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case logFormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case logFormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}
