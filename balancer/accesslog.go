package balancer

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
	out   *lockedWriter
	every uint64 // one line in every requests (5xx always)
	n     atomic.Uint64
	stop  chan struct{}
	done  sync.WaitGroup
}

// newAccessLog returns the access log of cfg writing to w, or nil when it
// is off.
func newAccessLog(cfg Config, w io.Writer) *accessLog {
	if !cfg.AccessLog {
		return nil
	}
	out := &lockedWriter{w: bufio.NewWriterSize(w, 64<<10)}
	a := &accessLog{out: out,
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
// The line is appended by hand into a recycled buffer: slog's JSON
// handler cost about 5 µs of CPU a request, a sixth of the balancer's
// whole cost per request (bench/README.md).
func (a *accessLog) log(ex *exchange, d time.Duration) {
	if a.every > 1 && ex.status < 500 && a.n.Add(1)%a.every != 0 {
		return
	}
	bp := lineBuffers.Get().(*[]byte)
	b := append((*bp)[:0], `{"time":"`...)
	b = time.Now().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","msg":"access","method":`...)
	b = appendJSONString(b, ex.method)
	b = append(b, `,"path":`...)
	b = appendJSONString(b, ex.path())
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(ex.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, ex.bodyBytes, 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
	b = append(b, `,"client":"`...)
	if ex.client.IsValid() {
		b = ex.client.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, `","upstream":`...)
	if ex.backend != nil {
		b = appendJSONString(b, []byte(ex.backend.label))
	} else {
		b = append(b, `"`+noBackend+`"`...)
	}
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(max(ex.attempts-1, 0)), 10)
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, []byte(ex.requestID))
	b = append(b, "}\n"...)
	_, _ = a.out.Write(b)
	*bp = b
	lineBuffers.Put(bp)
}

// lineBuffers recycles the access log's line buffers.
var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// appendJSONString appends s to b as a JSON string: quotes, backslashes
// and control bytes escaped, bytes that are not UTF-8 replaced by U+FFFD
// (a path is what a client sent, not necessarily text).
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
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
