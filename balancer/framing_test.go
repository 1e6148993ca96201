package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen is what a gateway stand-in received of one request: what decides
// what the request means, without what the balancer makes up per request
// (X-Request-Id) or per gateway (Host).
type seen struct {
	Method, Target, Body string
	Header               string // the other headers, sorted, one per line
}

// recorder is a gateway stand-in that records every request it gets.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecorder(t testing.TB) *recorder {
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			body = append(body, "<broken: "+err.Error()+">"...)
		}
		var lines []string
		for k, vs := range r.Header {
			if k == "X-Request-Id" {
				continue
			}
			lines = append(lines, k+": "+strings.Join(vs, "\x00"))
		}
		slices.Sort(lines)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{Method: r.Method, Target: r.RequestURI, Body: string(body),
			Header: strings.Join(lines, "\n")})
		rec.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

// take returns the requests recorded since the last take.
func (r *recorder) take() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	reqs := r.reqs
	r.reqs = nil
	return reqs
}

// exchangeRaw writes data on a new connection to addr and returns the
// statuses of the answers that come back before the connection closes or
// stays quiet for quiet.
func exchangeRaw(addr string, data []byte, quiet time.Duration) ([]int, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.Write(data); err != nil && !isReset(err) {
		return nil, err
	}
	var got []byte
	buf := make([]byte, 32<<10)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(quiet))
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, io.EOF) || isReset(err) {
				break
			}
			return nil, err
		}
	}
	var statuses []int
	br := bufio.NewReader(bytes.NewReader(got))
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		statuses = append(statuses, res.StatusCode)
	}
	return statuses, nil
}

// enginePair is a balancer on each engine, each in front of its own
// recorder.
type enginePair struct {
	addr [2]string
	rec  [2]*recorder
}

var pairEngines = [2]string{EngineLoop, EngineGoroutine}

func startEnginePair(t testing.TB) *enginePair {
	p := &enginePair{}
	for i, engine := range pairEngines {
		p.rec[i] = newRecorder(t)
		cfg := testConfig(p.rec[i].srv.URL)
		cfg.Engine = engine
		p.addr[i] = strings.TrimPrefix(startBalancer(t, cfg), "http://")
	}
	return p
}

// outcome is what one engine made of some bytes.
type outcome struct {
	statuses []int
	reqs     []seen
}

// run sends data to both engines at once and returns what each made of it.
func (p *enginePair) run(t testing.TB, data []byte) [2]outcome {
	var out [2]outcome
	var errs [2]error
	var wg sync.WaitGroup
	for i := range pairEngines {
		wg.Go(func() {
			out[i].statuses, errs[i] = exchangeRaw(p.addr[i], data, 150*time.Millisecond)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s engine: %v", pairEngines[i], err)
		}
	}
	for i := range pairEngines {
		out[i].reqs = p.rec[i].take()
	}
	return out
}

// runCompared is run, once more when the engines disagree: on a loaded
// machine an answer can come after run's quiet window, which looks like a
// difference; a real one shows again. What the first run left late is
// dropped first.
func (p *enginePair) runCompared(t testing.TB, data []byte) [2]outcome {
	out := p.run(t, data)
	if sameFraming(out) {
		return out
	}
	for _, r := range p.rec {
		r.take()
	}
	return p.run(t, data)
}

// sameFraming reports whether the engines did the same with some bytes:
// the same requests reached their gateways, and they answered the same.
// One difference is not one of framing: fasthttp refuses a request whose
// request line or a header line is bad as soon as that line is in, where
// the event loops wait for the whole header block (and then refuse it the
// same way, or cut the client off after --client-header-timeout). So an
// engine may have answered one 4xx more, last, when the other has not
// answered that request yet.
func sameFraming(out [2]outcome) bool {
	if !slices.Equal(out[0].reqs, out[1].reqs) {
		return false
	}
	a, b := out[0].statuses, out[1].statuses
	if len(a) < len(b) {
		a, b = b, a
	}
	switch len(a) - len(b) {
	case 0:
		return slices.Equal(a, b)
	case 1:
		last := a[len(a)-1]
		return slices.Equal(a[:len(b)], b) && last >= 400 && last < 500
	}
	return false
}

// framingSeeds are requests whose framing is ambiguous, or was: bare LF
// line ends, obs-fold, Content-Length and Transfer-Encoding together,
// duplicate or malformed lengths, whitespace before the colon.
var framingSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\n\r\n",
	"GET / HTTP/1.1\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
}

// TestEnginesFrameAlike sends each framing seed to both engines and
// compares what reached each gateway and what each answered. A bare LF
// ending a line of the request line, the header block or a chunked body's
// framing, an obs-fold, and Transfer-Encoding with Content-Length (or
// other than chunked) are refused with 400 by both, and nothing of them
// reaches a gateway.
func TestEnginesFrameAlike(t *testing.T) {
	t.Parallel()
	p := startEnginePair(t)
	for _, s := range framingSeeds {
		out := p.runCompared(t, []byte(s))
		if !sameFraming(out) {
			t.Errorf("%q: the engines disagree:\n\tloop:      %v %v\n\tgoroutine: %v %v", s,
				out[0].statuses, out[0].reqs, out[1].statuses, out[1].reqs)
		}
	}
	for _, s := range []string{
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\n\r\n",
		"GET / HTTP/1.1\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nX-B: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n folded\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc",
	} {
		out := p.run(t, []byte(s))
		for i, o := range out {
			if !slices.Equal(o.statuses, []int{http.StatusBadRequest}) || len(o.reqs) != 0 {
				t.Errorf("%q on the %s engine: answers %v, gateway got %v; want one 400 and nothing proxied",
					s, pairEngines[i], o.statuses, o.reqs)
			}
		}
	}
	// The 400 carries the house error body.
	for i, addr := range p.addr {
		conn := dialTCP(t, "http://"+addr)
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\n\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		res, body := readAnswer(t, conn)
		if res.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte(`"code":"invalid"`)) {
			t.Errorf("bare LF on the %s engine: %d %s, want 400 invalid", pairEngines[i], res.StatusCode, body)
		}
	}
}

// FuzzEnginesFrameAlike sends the same bytes to a balancer on each engine
// and compares what reaches the gateways (method, target, headers, body)
// and the statuses answered: the two engines must frame every request the
// same way, or a request one of them would smuggle past the other shows
// up as a difference. Its seed corpus (framingSeeds, and
// testdata/fuzz/FuzzEnginesFrameAlike) runs in every go test.
func FuzzEnginesFrameAlike(f *testing.F) {
	for _, s := range framingSeeds {
		f.Add([]byte(s))
	}
	p := startEnginePair(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := p.runCompared(t, data)
		if !sameFraming(out) {
			t.Fatalf("%q: the engines disagree:\n\tloop:      %v %s\n\tgoroutine: %v %s", data,
				out[0].statuses, fmt.Sprint(out[0].reqs), out[1].statuses, fmt.Sprint(out[1].reqs))
		}
	})
}

// TestScanHeadScansOnce: a header that reaches an event loop a byte at a
// time is framed once, each byte on its arrival, not again from its start
// at every read event (quadratic in the header's length: a slow client's
// cheap way to burn the loop's CPU); the result is the same as at once.
func TestScanHeadScansOnce(t *testing.T) {
	t.Parallel()
	head := "POST /longtask HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 4096) + "\r\nContent-Length: 2\r\n\r\n"
	req := head + "{}"
	var lc loopClient
	for i := 1; i < len(head); i++ {
		n, err := lc.scanHead([]byte(req[:i]))
		if err != nil || n != 0 {
			t.Fatalf("scanHead(first %d bytes) = %d, %v; want 0, nil", i, n, err)
		}
		if lc.scanned != i {
			t.Fatalf("after %d bytes the framer has seen %d: it rescans", i, lc.scanned)
		}
	}
	for _, in := range []string{head, req} { // the header complete, then the body in too
		if n, err := lc.scanHead([]byte(in)); err != nil || n != len(head) {
			t.Fatalf("scanHead(%d bytes) = %d, %v; want %d, nil", len(in), n, err, len(head))
		}
	}

	// A bare LF refused when it arrives, as at once.
	var bad loopClient
	dribble := "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"
	var err error
	for i := 1; i <= len(dribble) && err == nil; i++ {
		_, err = bad.scanHead([]byte(dribble[:i]))
	}
	if !errors.Is(err, errFraming) {
		t.Errorf("a bare LF sent a byte at a time: err = %v, want errFraming", err)
	}
}
