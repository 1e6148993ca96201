package balancer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// testEngineEnv names the engine the tests run the balancer with; unset,
// the default (loop).
const testEngineEnv = "SCALELAB_TEST_ENGINE"

// TestMain runs the package's tests on both engines: on the default one
// (the event loops), then, in a child process, on the goroutine engine,
// which serves what the loops hand over and every connection with
// --engine goroutine.
//
// Any event an engine sent that its connection's state refused (see
// loopClient.to) fails the run, whichever test caused it.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := transitionsRefused.Load(); n > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "balancer: %d client connection events refused by their state (see the log)\n", n)
		code = 1
	}
	fuzzing := flag.Lookup("test.fuzz") != nil && flag.Lookup("test.fuzz").Value.String() != ""
	if code != 0 || os.Getenv(testEngineEnv) != "" || fuzzing {
		os.Exit(code)
	}
	fmt.Fprintf(os.Stderr, "--- balancer: the tests again with %s=%s\n", testEngineEnv, EngineGoroutine)
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), testEngineEnv+"="+EngineGoroutine)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "balancer tests on the goroutine engine: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// rawClient is one client connection, written and read by hand, so that a
// test controls what goes on it (pipelining, keep-alive across engines).
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, base string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second)
	if err != nil {
		t.Fatalf("dial balancer: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// send writes raw requests, in one write.
func (c *rawClient) send(requests ...string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, strings.Join(requests, "")); err != nil {
		c.t.Fatalf("write requests: %v", err)
	}
}

// read reads one answer, body included.
func (c *rawClient) read(method string) (*http.Response, []byte) {
	c.t.Helper()
	res, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("read answer body: %v", err)
	}
	return res, body
}

// getReq is a raw GET of path.
func getReq(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n"
}

// TestPipelinedRequests sends requests in one write, one of them to
// /-/healthz (which moves the connection from the loops to the goroutine
// engine with what it had read), and expects each answer in order.
func TestPipelinedRequests(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "a")
	base := startBalancer(t, testConfig(gw.URL))
	c := dialRaw(t, base)
	c.send(getReq("/one"), getReq("/two?x=1"), getReq(opsPrefix+"/healthz"), getReq("/three"))
	for _, want := range []string{"/one", "/two", "", "/three"} {
		res, body := c.read(http.MethodGet)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("answer for %q: status %d, body %s", want, res.StatusCode, body)
		}
		if want == "" {
			if !bytes.Contains(body, []byte(`"status":"ok"`)) {
				t.Errorf("/-/healthz answered %s", body)
			}
			continue
		}
		if got := decodeEcho(t, body).Path; got != want {
			t.Errorf("answer path = %q, want %q", got, want)
		}
	}
	// And the connection goes on serving.
	c.send(getReq("/four"))
	if res, body := c.read(http.MethodGet); res.StatusCode != http.StatusOK || decodeEcho(t, body).Path != "/four" {
		t.Errorf("after the pipeline: status %d, body %s", res.StatusCode, body)
	}
}

// TestLargeBodies proxies request and answer bodies larger than the event
// loops pass on whole (replayLimit, loopBodyLimit): the request moves to
// the goroutine engine, the answer is streamed, and the connection serves
// the next request after both.
func TestLargeBodies(t *testing.T) {
	t.Parallel()
	const answerSize = 3*loopBodyLimit + 12345
	payload := bytes.Repeat([]byte("0123456789abcdef"), answerSize/16+1)[:answerSize]
	gw := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		w.Header().Set("X-Body-Sum", fmt.Sprintf("%x", sum))
		switch r.URL.Path {
		case "/large":
			w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
			_, _ = w.Write(payload)
		case "/chunked":
			for i := 0; i < len(payload); i += 100000 {
				_, _ = w.Write(payload[i:min(i+100000, len(payload))])
				http.NewResponseController(w).Flush()
			}
		default:
			_, _ = io.WriteString(w, "small")
		}
	}))
	base := startBalancer(t, testConfig(gw.url()))
	c := dialRaw(t, base)
	for _, path := range []string{"/large", "/chunked", "/small"} {
		c.send(getReq(path))
		res, body := c.read(http.MethodGet)
		want := payload
		if path == "/small" {
			want = []byte("small")
		}
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("GET %s: status %d, %d bytes, want 200 and %d bytes", path, res.StatusCode, len(body), len(want))
		}
	}
	upload := bytes.Repeat([]byte("u"), 3*replayLimit)
	sum := sha256.Sum256(upload)
	c.send(fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", len(upload), upload))
	res, _ := c.read(http.MethodPost)
	if got, want := res.Header.Get("X-Body-Sum"), fmt.Sprintf("%x", sum); res.StatusCode != http.StatusOK || got != want {
		t.Errorf("POST /upload: status %d, gateway's body sum %s, want 200 and %s", res.StatusCode, got, want)
	}
	c.send(getReq("/small"))
	if res, body := c.read(http.MethodGet); res.StatusCode != http.StatusOK || string(body) != "small" {
		t.Errorf("GET /small after the upload: status %d, body %q", res.StatusCode, body)
	}
}

// TestClientLeavesMidRequest closes client connections while their
// requests wait at a gateway; the balancer records them as 499 and goes
// on serving.
func TestClientLeavesMidRequest(t *testing.T) {
	t.Parallel()
	arrived := make(chan struct{}, 4)
	gw := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-r.Context().Done() // the balancer closes the gateway connection
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	base := startBalancer(t, testConfig(gw.url()))
	for range 2 {
		c := dialRaw(t, base)
		c.send(getReq("/slow"))
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("the request did not reach the gateway")
		}
		_ = c.conn.Close()
	}
	hc := newClient(t)
	if res, body := get(t, hc, base+"/fast"); res.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET /fast: status %d, body %q", res.StatusCode, body)
	}
	// The two requests whose clients left end as 499 (counted as 4xx),
	// once the balancer has noticed.
	want := fmt.Sprintf(`scalelab_balancer_requests_total{backend=%q,code="4xx"} 2`, gw.url())
	testutil.Eventually(t, 5*time.Second, func() error {
		if !containsLine(scrape(t, hc, base), want) {
			return fmt.Errorf("no line %s in /-/metrics", want)
		}
		return nil
	})
}

// TestInterimAnswerDropped has a gateway send 103 Early Hints before its
// answer: the balancer drops the interim answer, as both engines do, and
// passes the final one on.
func TestInterimAnswerDropped(t *testing.T) {
	t.Parallel()
	gw := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = io.WriteString(w, "final")
	}))
	base := startBalancer(t, testConfig(gw.url()))
	c := dialRaw(t, base)
	for range 2 {
		c.send(getReq("/hints"))
		if res, body := c.read(http.MethodGet); res.StatusCode != http.StatusOK || string(body) != "final" {
			t.Fatalf("GET /hints: status %d, body %q, want 200 final", res.StatusCode, body)
		}
	}
}

// TestPipelineWithoutReading sends many requests whose answers together
// exceed what the balancer buffers for a client (maxPendingOutput) and
// the sockets hold, and reads none until several are answered: the
// balancer holds the rest back (here the loops stop after about 12, the
// goroutine engine after 6) until the client reads, then serves them, all
// in order and whole.
func TestPipelineWithoutReading(t *testing.T) {
	t.Parallel()
	const size = 700 << 10 // under loopBodyLimit: passed on whole by the loops
	const n = 24           // 16 MiB of answers
	var served atomic.Int64
	gw := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		_, _ = w.Write(bytes.Repeat([]byte(r.URL.Path[1:2]), size))
	}))
	base := startBalancer(t, testConfig(gw.url()))
	c := dialRaw(t, base)
	var reqs []string
	for i := range n {
		reqs = append(reqs, getReq(fmt.Sprintf("/%c", 'a'+i)))
	}
	c.send(reqs...)
	testutil.Eventually(t, 10*time.Second, func() error {
		if k := served.Load(); k < 6 {
			return fmt.Errorf("the gateway has served %d requests", k)
		}
		return nil
	})
	for i := range n {
		res, body := c.read(http.MethodGet)
		want := bytes.Repeat([]byte{byte('a' + i)}, size)
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Fatalf("answer %d: status %d, %d bytes, want 200 and %d bytes of %c", i, res.StatusCode, len(body), size, 'a'+i)
		}
	}
}
