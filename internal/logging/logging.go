// Package logging builds the one slog.Logger a process uses.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"
)

// Formats accepted by New.
const (
	FormatText = "text"
	FormatJSON = "json"
	FormatAuto = "" // text on a terminal, JSON otherwise
)

// New returns a logger writing to w in the given format. An empty format
// picks text when w is a terminal and JSON otherwise (containers, files, CI).
func New(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	if format == FormatAuto {
		format = FormatJSON
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = FormatText
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case FormatText:
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", format)
	}
}
