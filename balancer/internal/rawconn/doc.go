// Package rawconn makes a socket's reads and writes plain non-blocking
// system calls that the Go scheduler does not hear about, and lets a
// request-answer protocol send a message and wait for its answer without
// the read that would find nothing.
//
// Why raw calls: net.Conn's Read and Write enter the kernel through
// syscall.Syscall, which tells the scheduler that a system call began. When
// one takes longer than the scheduler monitor's tick (20 µs), the monitor
// hands the goroutine's processor to another thread (a futex wake-up), the
// thread back from the call must get a processor again or sleep (another),
// and the monitor itself keeps waking every 20 µs for as long as it finds
// such calls. A loopback write runs the receiver's side of TCP too, and on
// a virtual machine a system call is slow, so under proxy load most writes
// outlast the tick: perf put about a tenth of the balancer's CPU in the
// monitor's sleeps and those hand-offs (bench/README.md). The socket is
// non-blocking, so no call can block; like the runtime's own netpoller
// calls they can be made raw, and the processor stays with the goroutine
// for the microseconds the call takes. Waiting for a socket to become
// readable or writable still parks the goroutine in the netpoller, with
// deadlines, as net.Conn does.
//
// Why held writes: a proxy writes a request and then reads its answer.
// The read right after the write nearly always finds nothing (the server
// has not answered yet), fails with EAGAIN and only then waits: a system
// call wasted per request. After HoldWrites, writes are kept until the next
// Read, which sends them and waits for the answer in one go (see
// Conn.writeRead).
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package rawconn
