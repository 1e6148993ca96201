package balancer

import (
	"errors"
	"strconv"
)

// Request framing. The two engines read requests with different code: the
// event loops find a header block's end themselves (CRLF CRLF) before
// fasthttp parses it, and the goroutine engine is fasthttp's server, whose
// parser also takes a bare LF as a line end. On input where the two
// disagree on where a request ends, a request could be hidden in another
// one's header or body, seen by one engine and not the other (request
// smuggling). So both engines run every request through one framer
// first, which refuses (400) what could be framed two ways:
//
//   - a line of the request line, the header block or a chunked body's
//     framing that ends in a bare LF (RFC 9112 section 2.2 allows
//     refusing it);
//   - a header line folded onto the next (obs-fold, section 5.2);
//   - Transfer-Encoding together with Content-Length, or a
//     Transfer-Encoding other than exactly chunked (section 6.1, 6.3);
//   - more than one Content-Length, or one that is not all digits.
//
// The event loops run it over each request's header block
// (loopClient.scanHead, which keeps its state between read events); the
// goroutine engine runs it over every byte it reads from a client
// (clientConn.Read), bodies included, so that it knows where each header
// block starts.

// errFraming is a request whose framing is refused (see above).
var errFraming = errors.New("the request's framing is ambiguous (bare LF, obs-fold, or Content-Length with Transfer-Encoding)")

// The framer's states.
const (
	frameHead      = iota // in a header block
	frameBody             // in a body of known length
	frameChunkSize        // in a chunk-size line
	frameChunkExt         // in a chunk-size line, past the size
	frameChunkData        // in a chunk's data
	frameChunkCRLF        // at the CRLF that ends a chunk's data
	frameTrailer          // in a chunked body's trailer section
)

// framer follows the framing of the requests on one connection, byte by
// byte in the header blocks and chunk-size lines, skipping over body
// data. Its zero value is at the start of a request.
type framer struct {
	state   int
	prev    byte  // the byte before, in a line being scanned
	line    int   // the line of the header block (0: the request line)
	col     int   // bytes in the current line
	started bool  // bytes of the current request went through
	left    int64 // body or chunk bytes still to skip
	digits  int   // hex digits of the chunk size
	// The start of the current header line, for Content-Length and
	// Transfer-Encoding, and what the block had of them.
	cur      [48]byte
	clCount  int
	cl       int64
	chunked  bool
	teOthers bool
	headDone bool // the header block just ended (for loopClient.scanHead)
}

// scan follows p, the next bytes of the connection, and returns how many
// of them are well framed: all of them, or the bytes before the first
// that is not, with errFraming and whether that byte is the first of its
// request.
func (f *framer) scan(p []byte) (int, bool, error) {
	for i := 0; i < len(p); i++ {
		switch f.state {
		case frameBody, frameChunkData:
			n := int64(len(p) - i)
			if n > f.left {
				n = f.left
			}
			f.left -= n
			i += int(n) - 1
			if f.left == 0 {
				if f.state == frameBody {
					f.reset()
				} else {
					f.state = frameChunkCRLF
					f.prev = 0
				}
			}
			continue
		}
		first := f.state == frameHead && !f.started
		if !f.step(p[i]) {
			return i, first, errFraming
		}
	}
	return len(p), false, nil
}

// reset goes back to the start of a request.
func (f *framer) reset() { *f = framer{} }

// step follows one byte of a header block, a chunk-size line or a trailer
// section, and reports whether it is well framed.
func (f *framer) step(c byte) bool {
	prev := f.prev
	f.prev = c
	switch f.state {
	case frameChunkCRLF:
		switch {
		case prev == 0 && c == '\r':
			return true
		case prev == '\r' && c == '\n':
			f.state, f.prev, f.digits = frameChunkSize, 0, 0
			return true
		}
		return false
	case frameChunkSize, frameChunkExt:
		return f.chunkSize(prev, c)
	}
	// A header block or a trailer section.
	f.started = true
	switch c {
	case '\n':
		if prev != '\r' {
			return false // a bare LF
		}
		return f.endLine()
	case '\r':
		f.col++
		return true
	case ' ', '\t':
		if f.col == 0 && (f.line > 0 || f.state == frameTrailer) {
			return false // obs-fold
		}
	}
	if prev == '\r' {
		return false // a bare CR
	}
	if f.col < len(f.cur) {
		f.cur[f.col] = c
	}
	f.col++
	return true
}

// endLine ends a line of a header block or trailer section (its CRLF is
// in), and the block at an empty line.
func (f *framer) endLine() bool {
	empty := f.col == 1 // just the CR
	n := f.col - 1      // the line without its CR
	line := f.cur[:min(n, len(f.cur))]
	f.col, f.prev = 0, 0
	if f.state == frameTrailer {
		if empty {
			f.reset()
		}
		return true
	}
	if f.line == 0 {
		if !empty {
			f.line = 1
		}
		return true // empty lines before the request line are skipped
	}
	if !empty {
		f.line++
		return f.field(line, n > len(f.cur))
	}
	// The end of the header block: what frames the body?
	switch {
	case f.teOthers || f.chunked && f.clCount > 0 || f.clCount > 1:
		return false
	case f.chunked:
		f.state, f.digits = frameChunkSize, 0
	case f.cl > 0:
		f.state, f.left = frameBody, f.cl
	default:
		f.reset()
	}
	f.headDone = true
	return true
}

// field looks at the start of one header line for Content-Length and
// Transfer-Encoding; cut: the line was longer than that.
func (f *framer) field(line []byte, cut bool) bool {
	const cl, te = "content-length:", "transfer-encoding:"
	switch {
	case hasPrefixFold(line, cl):
		f.clCount++
		v := trimOWS(line[len(cl):])
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < 0 || len(v) == 0 || v[0] < '0' || v[0] > '9' || cut {
			return false
		}
		f.cl = n
	case hasPrefixFold(line, te):
		v := trimOWS(line[len(te):])
		if f.chunked || cut || !equalFold(v, "chunked") {
			f.teOthers = true
		}
		f.chunked = true
	}
	return true
}

// chunkSize follows a chunk-size line: hex digits, an optional extension,
// CRLF.
func (f *framer) chunkSize(prev, c byte) bool {
	if c == '\n' {
		if prev != '\r' || f.digits == 0 {
			return false
		}
		if f.left == 0 {
			f.state, f.prev, f.col = frameTrailer, 0, 0
			return true
		}
		f.state = frameChunkData
		return true
	}
	if prev == '\r' {
		return false
	}
	if f.state == frameChunkSize {
		if d, ok := hexDigit(c); ok {
			if f.digits >= 15 {
				return false // over any body the balancer takes
			}
			f.left, f.digits = f.left<<4|int64(d), f.digits+1
			return true
		}
		f.state = frameChunkExt
	}
	return true // an extension, or the CR
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// hasPrefixFold reports whether b begins with prefix, a lower-case ASCII
// string, in any case.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}

// equalFold reports whether b is s, a lower-case ASCII string, in any case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if b[i]|0x20 != s[i] {
			return false
		}
	}
	return true
}

// trimOWS trims spaces and tabs around b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
