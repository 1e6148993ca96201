package logging

import (
	"fmt"
	"log/slog"
)

// Printf is a *slog.Logger with the printf-style methods those libraries
// call: gnet's logging.Logger, nats-server's server.Logger and fasthttp's
// Logger. Their debug, trace, info and notice lines go to debug (the NATS
// server is chatty at notice level), warnings and fasthttp's Printf (an
// error serving a connection) to warn, errors and fatal ones to error:
// a library never ends the process through it.
type Printf struct{ Log *slog.Logger }

// Debugf logs at debug.
func (p Printf) Debugf(format string, args ...any) { p.Log.Debug(fmt.Sprintf(format, args...)) }

// Tracef logs at debug.
func (p Printf) Tracef(format string, args ...any) { p.Log.Debug(fmt.Sprintf(format, args...)) }

// Infof logs at debug.
func (p Printf) Infof(format string, args ...any) { p.Log.Debug(fmt.Sprintf(format, args...)) }

// Noticef logs at debug.
func (p Printf) Noticef(format string, args ...any) { p.Log.Debug(fmt.Sprintf(format, args...)) }

// Warnf logs at warn.
func (p Printf) Warnf(format string, args ...any) { p.Log.Warn(fmt.Sprintf(format, args...)) }

// Printf logs at warn.
func (p Printf) Printf(format string, args ...any) { p.Log.Warn(fmt.Sprintf(format, args...)) }

// Errorf logs at error.
func (p Printf) Errorf(format string, args ...any) { p.Log.Error(fmt.Sprintf(format, args...)) }

// Fatalf logs at error; it does not exit.
func (p Printf) Fatalf(format string, args ...any) { p.Log.Error(fmt.Sprintf(format, args...)) }
