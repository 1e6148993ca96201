package balancer

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
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
	c.Close()
	ln.Close()
	if _, err := pl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept() on a closed listener = %v, want %v", err, net.ErrClosed)
	}
}
