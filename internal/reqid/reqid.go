package reqid

import "crypto/rand"

// Header is the HTTP header that carries the id, and the NATS header that
// carries it on through the bus, so that workers and services log the id
// the client saw.
const Header = "X-Request-ID"

// MaxLen bounds an accepted id; longer ones are replaced.
const MaxLen = 128

// New returns a random id: 26 base32 characters, 130 random bits, unique
// without coordination between processes. crypto/rand.Text never fails.
func New() string { return rand.Text() }

// Or returns id when it is Valid, and a New one otherwise.
func Or(id string) string {
	if Valid(id) {
		return id
	}
	return New()
}

// Valid reports whether id may be passed on: 1 to MaxLen token characters
// (RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~). UUIDs, ULIDs,
// NUIDs and hex or base32 ids all pass. A client's id ends up in logs and
// NATS headers, so anything that could break a log line or smuggle a
// header (long values, spaces, control characters, non-ASCII) is replaced.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := range len(id) {
		if !isTokenChar(id[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
