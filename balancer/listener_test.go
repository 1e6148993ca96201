package balancer

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"

	"github.com/scalelab/scalelab/balancer/internal/rawconn"
)

// flakyListener fails Accept with errs, in turn, then accepts from the
// embedded listener.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// TestPatientListener: running out of file descriptors does not end the
// accept loop; a closed listener does.
func TestPatientListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: fmt.Errorf("accept4: %w", syscall.EMFILE)}
	pl := patientListener{Listener: &flakyListener{Listener: ln, errs: []error{emfile, emfile}}, log: testLogger(t)}
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
		}
	}()
	c, err := pl.Accept()
	if err != nil {
		t.Fatalf("Accept() after two EMFILE = %v, want a connection", err)
	}
	cc, ok := c.(*clientConn)
	if !ok {
		t.Fatalf("Accept() = %T, want a *clientConn", c)
	}
	if _, raw := cc.Conn.(*rawconn.Conn); !raw && runtime.GOOS == "linux" {
		t.Errorf("Accept() = a clientConn over %T, want over a *rawconn.Conn (raw reads and writes)", cc.Conn)
	}
	c.Close()
	ln.Close()
	if _, err := pl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept() on a closed listener = %v, want %v", err, net.ErrClosed)
	}
}

// TestGatewayConnsAreRaw: a connection to a gateway over a socket makes
// raw reads and writes and holds each request for the read of its answer;
// another kind of connection (a custom Config.Dial's) is used as it is.
func TestGatewayConnsAreRaw(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	gc := newGatewayConn(c)
	defer gc.Close()
	if gc.raw == nil && runtime.GOOS == "linux" {
		t.Errorf("newGatewayConn(%T).raw = nil, want the raw connection", c)
	}
	a, b := net.Pipe()
	defer b.Close()
	pc := newGatewayConn(a)
	defer pc.Close()
	if pc.raw != nil || pc.Conn != a {
		t.Errorf("newGatewayConn(pipe) = %+v, want the pipe as it is", pc)
	}
	pc.holdRequest() // a no-op without a raw connection
	go func() { _, _ = pc.Write([]byte("x")) }()
	if n, err := b.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Errorf("a write on a pipe gateway connection did not arrive: %d, %v", n, err)
	}
}
