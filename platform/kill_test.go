package platform

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestKillableListener: kill resets the open connections and refuses new
// ones at once, while Accept neither returns a connection nor fails (the
// server must not notice) until the server closes the listener.
func TestKillableListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kl := newKillableListener(ln)
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := kl.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()

	kl.kill()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) || isTimeout(err) {
		t.Errorf("read on a killed gateway's connection = %v, want a reset", err)
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("a killed gateway's port still accepts connections")
	}
	select {
	case err := <-acceptErr:
		t.Fatalf("Accept returned %v after kill, want it to block until Close", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := kl.Close(); err != nil {
		t.Errorf("Close after kill = %v, want nil", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked 5 s after Close")
	}
}

// isTimeout tells a read that merely waited out its deadline, which is
// not a reset.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
