package rawconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected pair over network ("tcp" or "unix"): the
// client side wrapped, the server side a plain net.Conn.
func pair(t *testing.T, network string) (*Conn, net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	rc, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) is not a *Conn", c)
	}
	return rc, s
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(net.Pipe conn) = %T, want the conn itself", got)
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			c, s := pair(t, network)
			if c.NetConn() == nil {
				t.Fatal("NetConn is nil")
			}
			msg := bytes.Repeat([]byte("scalelab "), 100_000) // larger than a socket buffer
			done := make(chan error, 1)
			go func() {
				_, err := c.Write(msg)
				done <- err
			}()
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(s, got); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Write: %v", err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatal("the peer read other bytes than were written")
			}
			if _, err := s.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "pong" {
				t.Fatalf("Read = %q, %v; want pong", buf[:n], err)
			}
			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v; want 0, nil", n, err)
			}
			s.Close()
			if _, err := c.Read(buf); err != io.EOF {
				t.Fatalf("Read after the peer closed: %v, want io.EOF", err)
			}
		})
	}
}

func TestErrorsLookLikeNetConns(t *testing.T) {
	c, s := pair(t, "tcp")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := c.Read(make([]byte, 8))
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read past the deadline: %#v; want a read OpError around os.ErrDeadlineExceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v is not a net.Error timeout", err)
	}

	// A reset by the peer: SO_LINGER 0 makes its close send RST.
	_ = s.(*net.TCPConn).SetLinger(0)
	s.Close()
	_ = c.SetReadDeadline(time.Time{})
	_, err = c.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read from a reset connection: %v; want a read OpError with ECONNRESET", err)
	}
	var writeErr error
	for range 100 { // the first writes may land before the reset is known
		if _, writeErr = c.Write([]byte("x")); writeErr != nil {
			break
		}
	}
	if !errors.Is(writeErr, syscall.EPIPE) && !errors.Is(writeErr, syscall.ECONNRESET) {
		t.Fatalf("Write to a reset connection: %v; want EPIPE or ECONNRESET", writeErr)
	}

	c.Close()
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
	}
}

func TestSyscallConnIsTheSocket(t *testing.T) {
	c, _ := pair(t, "tcp")
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var typ int
	if err := rc.Control(func(fd uintptr) {
		typ, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
	}); err != nil || typ != syscall.SOCK_STREAM {
		t.Fatalf("SO_TYPE = %d, %v; want a stream socket", typ, err)
	}
}

// nothingArrives fails t if s can read something within a short while.
func nothingArrives(t *testing.T, s net.Conn, what string) {
	t.Helper()
	_ = s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	defer s.SetReadDeadline(time.Time{})
	if n, err := s.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the peer read %d bytes (err %v), want nothing", what, n, err)
	}
}

func TestHeldWritesGoWithTheNextRead(t *testing.T) {
	c, s := pair(t, "tcp")
	c.HoldWrites()
	for _, part := range []string{"GET / HTTP/1.1\r\n", "Host: x\r\n\r\n"} {
		if n, err := c.Write([]byte(part)); n != len(part) || err != nil {
			t.Fatalf("held Write = %d, %v", n, err)
		}
	}
	nothingArrives(t, s, "before the read")

	answered := make(chan error, 1)
	go func() {
		req := make([]byte, len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if _, err := io.ReadFull(s, req); err != nil {
			answered <- err
			return
		}
		_, err := s.Write([]byte("answer to " + string(req[:3])))
		answered <- err
	}()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "answer to GET" {
		t.Fatalf("Read = %q, %v; want the answer", buf[:n], err)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	// The hold ends with the read: the next write goes at once.
	if _, err := c.Write([]byte("now")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "now" {
		t.Fatalf("peer read %q, %v; want now", got, err)
	}
}

func TestHeldWritesAreSentOnceAcrossATimedOutRead(t *testing.T) {
	c, s := pair(t, "unix")
	c.HoldWrites()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with no answer: %v, want a timeout", err)
	}
	got := make([]byte, len("request"))
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "request" {
		t.Fatalf("peer read %q, %v; want the request", got, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := s.Write([]byte("late answer")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "late answer" {
		t.Fatalf("second Read = %q, %v; want the late answer", buf[:n], err)
	}
	nothingArrives(t, s, "after the second read") // the request is not sent again
}

func TestHoldingTooMuchSendsAtOnce(t *testing.T) {
	c, s := pair(t, "tcp")
	c.HoldWrites()
	small := []byte("head")
	if _, err := c.Write(small); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{'b'}, maxHeld)
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(big)
		done <- err
	}()
	got := make([]byte, len(small)+len(big))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(small)], small) || !bytes.Equal(got[len(small):], big) {
		t.Fatal("the peer read the held and the large write out of order or altered")
	}
}

func TestHeldRequestLargerThanTheSendBuffer(t *testing.T) {
	c, s := pair(t, "tcp")
	// Small buffers on both sides, so the held request cannot go in one
	// write and the rest must wait for room.
	_ = c.NetConn().(*net.TCPConn).SetWriteBuffer(4096)
	_ = s.(*net.TCPConn).SetReadBuffer(4096)
	req := bytes.Repeat([]byte("0123456789abcdef"), maxHeld/16)
	answered := make(chan error, 1)
	go func() {
		got := make([]byte, len(req))
		if _, err := io.ReadFull(s, got); err != nil {
			answered <- err
			return
		}
		if !bytes.Equal(got, req) {
			answered <- errors.New("the request arrived altered")
			return
		}
		_, err := s.Write([]byte("ok"))
		answered <- err
	}()
	c.HoldWrites()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("Read = %q, %v; want ok", buf[:n], err)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
}

func TestCloseDropsHeldWrites(t *testing.T) {
	c, s := pair(t, "tcp")
	c.HoldWrites()
	if _, err := c.Write([]byte("abandoned request")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("peer read %q, %v; want EOF and nothing", b, err)
	}
}

// TestConcurrentReadAndWrite: without HoldWrites, one goroutine may read
// while another writes, as net/http's server does (run with -race).
func TestConcurrentReadAndWrite(t *testing.T) {
	c, s := pair(t, "tcp")
	go func() { _, _ = io.Copy(s, s) }() // echo
	msg := bytes.Repeat([]byte("echo "), 50_000)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(msg))
		_, _ = io.ReadFull(c, b)
		got <- b
	}()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-got, msg) {
		t.Fatal("the echo differs from what was written")
	}
}
