package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/testutil"
)

// stalledHeader is the header of an 8 MiB POST /longtask, sent by a client
// that then sends nothing more.
const stalledHeader = "POST /longtask HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" +
	"Content-Length: 8388608\r\n\r\n"

// vmRSS returns the process's resident set size in bytes (VmRSS in
// /proc/self/status).
func vmRSS(t *testing.T) int64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/self/status")
	return 0
}

// dialTCP opens a client connection to the balancer at base.
func dialTCP(t *testing.T, base string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 2*time.Second)
	if err != nil {
		t.Fatalf("dial balancer: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// refused reports whether the balancer closed conn without an answer, as
// it does a connection over a cap: a read sees the close at once.
func refused(conn net.Conn) bool {
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	return n == 0 && (errors.Is(err, io.EOF) || err != nil && isReset(err))
}

// TestStalledUploadsBoundedMemory is the attack of issue #24: 1,000
// connections each send the header of an 8 MiB POST and stall. The
// balancer allocated each announced body whole (300 such connections cost
// 2.4 GB); now it holds only what arrived, so its RSS grows by less than
// 64 MiB, and a normal client is served throughout. The per-IP cap is
// raised to let the 1,000 in, and refuses the one after them.
func TestStalledUploadsBoundedMemory(t *testing.T) {
	const stalled = 1000
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	cfg.MaxConnsPerIP = stalled + 1 // the stalled ones and the normal client
	base := startBalancer(t, cfg)
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	normal := func() error {
		res, err := client.Post(base+"/longtask", "application/json", strings.NewReader(`{"n":1}`))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", res.StatusCode, body)
		}
		return nil
	}
	for range 20 { // warm up: pools, buffers, the gateway connection
		if err := normal(); err != nil {
			t.Fatalf("normal request before the attack: %v", err)
		}
	}
	runtime.GC()
	debug.FreeOSMemory()
	before := vmRSS(t)

	conns := make([]net.Conn, 0, stalled)
	for range stalled {
		conn := dialTCP(t, base)
		if _, err := io.WriteString(conn, stalledHeader); err != nil {
			t.Fatalf("write header: %v", err)
		}
		conns = append(conns, conn)
	}
	// The cap: the connection after them is refused.
	if extra := dialTCP(t, base); !refused(extra) {
		t.Errorf("connection %d from one IP was not refused with --max-conns-per-ip=%d", stalled+2, cfg.MaxConnsPerIP)
	}
	// A normal client is served while they stall, and the RSS is sampled
	// throughout, for at least a second.
	peak := before
	deadline := time.Now().Add(time.Second)
	for n := 0; n < 50 || time.Now().Before(deadline); n++ {
		if err := normal(); err != nil {
			t.Fatalf("normal request %d during the attack: %v", n, err)
		}
		peak = max(peak, vmRSS(t))
	}
	growth := peak - before
	t.Logf("RSS %d MiB before, %d MiB at the peak with %d stalled uploads: +%.1f MiB",
		before>>20, peak>>20, stalled, float64(growth)/(1<<20))
	if limit := int64(64 << 20); growth >= limit && !raceEnabled {
		t.Errorf("RSS grew by %.1f MiB with %d stalled 8 MiB uploads, want < 64 MiB", float64(growth)/(1<<20), stalled)
	}
	// None of them was answered or cut: they are within their timeouts.
	for i, conn := range conns[:10] {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		var ne net.Error
		if n, err := conn.Read(make([]byte, 1)); n > 0 || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("stalled connection %d: read %d bytes, %v; want nothing yet", i, n, err)
		}
	}
}

// TestConnCaps: past --max-conns-per-ip a new connection from that IP is
// closed at once, unread, and past --max-conns any new connection is;
// once one closes, a new one is served again.
func TestConnCaps(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw")
	for _, tt := range []struct {
		name            string
		maxConns, perIP int
	}{
		{"per IP", 0, 3},
		{"total", 3, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(gw.URL)
			cfg.MaxConns, cfg.MaxConnsPerIP = tt.maxConns, tt.perIP
			base := startBalancer(t, cfg)
			held := make([]*rawClient, 3)
			for i := range held {
				held[i] = dialRaw(t, base)
				held[i].send(getReq("/held"))
				if res, body := held[i].read(http.MethodGet); res.StatusCode != http.StatusOK {
					t.Fatalf("connection %d: status %d %s", i, res.StatusCode, body)
				}
			}
			over := dialTCP(t, base)
			_, _ = io.WriteString(over, getReq("/over"))
			if !refused(over) {
				t.Fatalf("a fourth connection was served, want it closed at once")
			}
			_ = held[0].conn.Close()
			// The slot comes back once the balancer sees the close.
			testutil.Eventually(t, 5*time.Second, func() error {
				c := dialTCP(t, base)
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.WriteString(c, getReq("/again")); err != nil {
					return err
				}
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					_ = c.Close()
					return err
				}
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", res.StatusCode)
				}
				return nil
			})
			// The held ones still serve.
			held[1].send(getReq("/still"))
			if res, _ := held[1].read(http.MethodGet); res.StatusCode != http.StatusOK {
				t.Errorf("held connection after the refusal: status %d", res.StatusCode)
			}
		})
	}
}

// readAnswer reads one answer from conn, within a few seconds.
func readAnswer(t *testing.T, conn net.Conn) (*http.Response, []byte) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	return res, body
}

// TestSlowClientsAreCut: a client that sends its header block too slowly,
// sends nothing at all, or lets a body stall (small, held by the event
// loops, or large, streamed to the gateway) gets 408 with the house error
// body once the timeout passes, and no gateway gets a whole request.
func TestSlowClientsAreCut(t *testing.T) {
	t.Parallel()
	var whole atomic.Int64
	gw := httpHandlerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			whole.Add(1)
		}
	})
	cfg := testConfig(gw)
	cfg.ClientHeaderTimeout = 300 * time.Millisecond
	cfg.ClientBodyTimeout = 300 * time.Millisecond
	base := startBalancer(t, cfg)
	big := strings.Repeat("x", 200<<10)
	for _, tt := range []struct{ name, sent string }{
		{"partial header", "GET /slow HTTP/1.1\r\nHost: test\r\nX-A: 1\r\n"},
		{"nothing", ""},
		{"small body", "POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + big[:10]},
		{"large body", "POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n" + big},
		{"large chunked body", "POST /slow HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(big), big)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Timed from before the dial: the balancer's clock for a new
			// connection starts at its accept, which can come before the
			// dial returns here.
			start := time.Now()
			conn := dialTCP(t, base)
			if _, err := io.WriteString(conn, tt.sent); err != nil {
				t.Fatalf("write: %v", err)
			}
			res, body := readAnswer(t, conn)
			if res.StatusCode != http.StatusRequestTimeout || !bytes.Contains(body, []byte(`"error"`)) {
				t.Errorf("status %d %s, want 408 with the house error body", res.StatusCode, body)
			}
			if d := time.Since(start); d < cfg.ClientBodyTimeout {
				t.Errorf("cut after %v, before the timeout", d)
			}
		})
	}
	t.Cleanup(func() {
		if n := whole.Load(); n != 0 {
			t.Errorf("the gateway read %d whole requests, want 0", n)
		}
	})
}

// httpHandlerBackend starts a gateway stand-in serving h and returns its
// URL.
func httpHandlerBackend(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	k := startKillable(t, h)
	return k.url()
}

// TestLargeBodyStreams: a body over replayLimit reaches the gateway as
// the client sends it (the gateway reads its start while the client still
// holds the rest back), a large chunked one arrives whole, one over
// maxRequestBody is cut with 413, and one refused by a dead gateway
// before anything was sent is retried on another (nothing of it was read
// yet).
func TestLargeBodyStreams(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	var mu sync.Mutex
	var got []int
	gw := httpHandlerBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 100<<10)
		n, _ := io.ReadFull(r.Body, buf)
		if n == len(buf) {
			select {
			case started <- struct{}{}:
			default:
			}
		}
		rest, err := io.Copy(io.Discard, r.Body)
		mu.Lock()
		got = append(got, n+int(rest))
		mu.Unlock()
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = fmt.Fprint(w, n+int(rest))
	})
	cfg := testConfig(deadURL(t), gw)
	base := startBalancer(t, cfg)

	t.Run("streams as it comes", func(t *testing.T) {
		conn := dialTCP(t, base)
		size := 300 << 10
		body := strings.Repeat("y", size)
		head := fmt.Sprintf("PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n", size)
		if _, err := io.WriteString(conn, head+body[:150<<10]); err != nil {
			t.Fatalf("write: %v", err)
		}
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("the gateway did not get the body's start while the client held the rest")
		}
		if _, err := io.WriteString(conn, body[150<<10:]); err != nil {
			t.Fatalf("write the rest: %v", err)
		}
		res, answer := readAnswer(t, conn)
		if res.StatusCode != http.StatusOK || string(answer) != strconv.Itoa(size) {
			t.Errorf("PUT of %d bytes = %d %s, want 200 and the size", size, res.StatusCode, answer)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		conn := dialTCP(t, base)
		chunk := strings.Repeat("c", 50<<10)
		req := "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk), 4) + "0\r\n\r\n"
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatalf("write: %v", err)
		}
		res, answer := readAnswer(t, conn)
		if res.StatusCode != http.StatusOK || string(answer) != strconv.Itoa(4*len(chunk)) {
			t.Errorf("chunked POST of %d bytes = %d %s, want 200 and the size", 4*len(chunk), res.StatusCode, answer)
		}
	})
	t.Run("chunked over the limit", func(t *testing.T) {
		conn := dialTCP(t, base)
		if _, err := io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 1<<20, strings.Repeat("z", 1<<20))
		go func() {
			for range 9 { // 9 MiB, past the 8 MiB limit
				if _, err := io.WriteString(conn, chunk); err != nil {
					return
				}
			}
		}()
		res, answer := readAnswer(t, conn)
		if res.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(answer, []byte(`"too_large"`)) {
			t.Errorf("chunked POST of 9 MiB = %d %s, want 413 too_large", res.StatusCode, answer)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	for _, n := range got {
		if n > maxRequestBody {
			t.Errorf("the gateway read a body of %d bytes, over the limit", n)
		}
	}
}

// TestLimitsConfig checks the flags, environment variables and Validate
// rules of the limits on client connections.
func TestLimitsConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		env    map[string]string
		args   []string
		want   func(*Config)
		errors []string
	}{
		{name: "defaults", want: func(*Config) {}},
		{name: "environment", env: map[string]string{
			"SCALELAB_MAX_CONNS": "100", "SCALELAB_MAX_CONNS_PER_IP": "10",
			"SCALELAB_CLIENT_HEADER_TIMEOUT": "2s", "SCALELAB_CLIENT_BODY_TIMEOUT": "3s",
		}, want: func(c *Config) {
			c.MaxConns, c.MaxConnsPerIP = 100, 10
			c.ClientHeaderTimeout, c.ClientBodyTimeout = 2*time.Second, 3*time.Second
		}},
		{name: "flags override environment", env: map[string]string{"SCALELAB_MAX_CONNS": "100"},
			args: []string{"--max-conns", "0", "--max-conns-per-ip", "0", "--client-header-timeout", "1s", "--client-body-timeout", "1m"},
			want: func(c *Config) {
				c.MaxConns, c.MaxConnsPerIP = 0, 0
				c.ClientHeaderTimeout, c.ClientBodyTimeout = time.Second, time.Minute
			}},
		{name: "bad values", args: []string{"--max-conns", "-1", "--max-conns-per-ip", "-2",
			"--client-header-timeout", "0s", "--client-body-timeout", "-1s"},
			errors: []string{
				"balancer: --max-conns: must be >= 0, got -1",
				"balancer: --max-conns-per-ip: must be >= 0, got -2",
				"balancer: --client-header-timeout: must be positive, got 0s",
				"balancer: --client-body-timeout: must be positive, got -1s",
			}},
		{name: "per IP over the total", args: []string{"--max-conns", "10", "--max-conns-per-ip", "20"},
			errors: []string{"balancer: --max-conns-per-ip: 20 is over --max-conns (10)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := envflag.New(fs, func(k string) string { return tt.env[k] })
			got := DefaultConfig()
			got.RegisterFlags(s)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("Err() = %v", err)
			}
			var errs []string
			if err := got.Validate(); err != nil {
				errs = strings.Split(err.Error(), "\n")
			}
			if !slices.Equal(errs, tt.errors) {
				t.Errorf("Validate() = %q, want %q", errs, tt.errors)
			}
			if tt.want == nil {
				return
			}
			want := DefaultConfig()
			tt.want(&want)
			if got.MaxConns != want.MaxConns || got.MaxConnsPerIP != want.MaxConnsPerIP ||
				got.ClientHeaderTimeout != want.ClientHeaderTimeout || got.ClientBodyTimeout != want.ClientBodyTimeout {
				t.Errorf("limits = %d, %d, %v, %v; want %d, %d, %v, %v", got.MaxConns, got.MaxConnsPerIP,
					got.ClientHeaderTimeout, got.ClientBodyTimeout, want.MaxConns, want.MaxConnsPerIP,
					want.ClientHeaderTimeout, want.ClientBodyTimeout)
			}
		})
	}
}
