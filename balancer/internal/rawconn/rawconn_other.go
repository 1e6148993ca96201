//go:build !linux

package rawconn

import "net"

// Wrap returns c: raw system calls are only made on Linux.
func Wrap(c net.Conn) net.Conn { return c }

// The methods below keep Conn whole for the compiler; Wrap makes no Conn
// off Linux.

func (c *Conn) read(p []byte) (int, error)  { return c.Conn.Read(p) }
func (c *Conn) write(p []byte) (int, error) { return c.Conn.Write(p) }

func (c *Conn) writeRead(w, p []byte) (sent, n int, err error) {
	sent, err = c.Conn.Write(w)
	if err != nil {
		return sent, 0, err
	}
	n, err = c.Conn.Read(p)
	return sent, n, err
}
