package balancer

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// The access log (--access-log): one JSON line per request on standard
// output, apart from the process's own log on standard error: time,
// method, path (without the query, which may carry what a log should
// not), status, bytes (of the answer's body sent), duration_ms, client,
// upstream (the gateway that answered, or "-"), retries and request_id.
// Off by default. --access-log-sample n logs one request in n, and every
// 5xx whatever the sample. The lines go through a buffer flushed every
// accessFlushEvery and at the end of Run, so that a busy balancer makes
// one write for many lines, not one each (bench/README.md has its cost).

// accessFlushEvery is how often the access log's buffer is written out:
// lines reach a reader within this, and a write carries many.
const accessFlushEvery = 100 * time.Millisecond

// accessLog writes the access log's lines.
type accessLog struct {
	logger *slog.Logger
	out    *lockedWriter
	every  uint64 // one line in every requests (5xx always)
	n      atomic.Uint64
	stop   chan struct{}
	done   sync.WaitGroup
}

// newAccessLog returns the access log of cfg writing to w, or nil when it
// is off.
func newAccessLog(cfg Config, w io.Writer) *accessLog {
	if !cfg.AccessLog {
		return nil
	}
	out := &lockedWriter{w: bufio.NewWriterSize(w, 64<<10)}
	a := &accessLog{logger: slog.New(slog.NewJSONHandler(out, nil)), out: out,
		every: uint64(max(cfg.AccessLogSample, 1)), stop: make(chan struct{})}
	a.done.Go(func() {
		t := time.NewTicker(accessFlushEvery)
		defer t.Stop()
		for {
			select {
			case <-a.stop:
				a.out.flush()
				return
			case <-t.C:
				a.out.flush()
			}
		}
	})
	return a
}

// close writes out what is buffered and stops the flushes.
func (a *accessLog) close() {
	if a != nil {
		close(a.stop)
		a.done.Wait()
	}
}

// log writes the line of ex, which took d, unless the sample skips it.
func (a *accessLog) log(ex *exchange, d time.Duration) {
	if a.every > 1 && ex.status < 500 && a.n.Add(1)%a.every != 0 {
		return
	}
	upstream := noBackend
	if ex.backend != nil {
		upstream = ex.backend.label
	}
	client := "-"
	if ex.client.IsValid() {
		client = ex.client.String()
	}
	a.logger.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("method", string(ex.method)),
		slog.String("path", string(ex.path())),
		slog.Int("status", ex.status),
		slog.Int64("bytes", ex.bodyBytes),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("client", client),
		slog.String("upstream", upstream),
		slog.Int("retries", max(ex.attempts-1, 0)),
		slog.String("request_id", ex.requestID),
	)
}

// lockedWriter is a buffered writer shared by the handlers' goroutines
// and the flusher.
type lockedWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.w.Flush()
}
