package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

// clock is a settable time source for a Verifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// verifierAt returns a Verifier for testKeys whose clock is c.
func verifierAt(c *clock) *Verifier {
	v := NewVerifier(testKeys())
	v.now = c.now
	return v
}

// TestVerifierRemembersTokens: a token that verified is answered from
// memory (the same claims, not a new parse) for as long as the parser
// would accept it, and no longer: past exp plus the leeway, or before iat
// minus the leeway, it fails with the parser's own error.
func TestVerifierRemembersTokens(t *testing.T) {
	t.Parallel()
	t0 := time.Now().Truncate(time.Second)
	clk := &clock{t: t0}
	v := verifierAt(clk)
	tok := sign(t, jwt.SigningMethodHS256, goodClaims(t0), []byte(testSecret))

	first, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	again, err := v.Verify(tok)
	if err != nil || again != first {
		t.Fatalf("second Verify() = %p, %v; want the remembered claims %p", again, err, first)
	}

	exp := t0.Add(time.Hour)
	clk.set(exp.Add(Leeway - time.Nanosecond))
	if got, err := v.Verify(tok); err != nil || got != first {
		t.Errorf("Verify() just inside exp+leeway = %p, %v; want the remembered claims", got, err)
	}
	clk.set(exp.Add(Leeway))
	if _, err := v.Verify(tok); !errors.Is(err, jwt.ErrTokenExpired) || !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify() at exp+leeway = %v, want %v", err, jwt.ErrTokenExpired)
	}
	if n := v.verified.len(); n != 0 {
		t.Errorf("%d tokens remembered after expiry, want 0", n)
	}

	// A clock that goes back before iat-leeway refuses the token too.
	clk.set(t0)
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify() back at iat = %v", err)
	}
	clk.set(t0.Add(-Leeway - time.Second))
	if _, err := v.Verify(tok); !errors.Is(err, jwt.ErrTokenUsedBeforeIssued) {
		t.Errorf("Verify() before iat-leeway = %v, want %v", err, jwt.ErrTokenUsedBeforeIssued)
	}
}

// TestVerifierRemembersNotBefore: the window of a remembered token starts
// at its nbf (minus the leeway) when nbf is later than iat.
func TestVerifierRemembersNotBefore(t *testing.T) {
	t.Parallel()
	t0 := time.Now().Truncate(time.Second)
	clk := &clock{t: t0}
	v := verifierAt(clk)
	claims := goodClaims(t0)
	nbf := t0.Add(10 * time.Minute)
	claims.NotBefore = jwt.NewNumericDate(nbf)
	tok := sign(t, jwt.SigningMethodHS256, claims, []byte(testSecret))

	if _, err := v.Verify(tok); !errors.Is(err, jwt.ErrTokenNotValidYet) {
		t.Fatalf("Verify() before nbf = %v, want %v", err, jwt.ErrTokenNotValidYet)
	}
	if n := v.verified.len(); n != 0 {
		t.Fatalf("%d tokens remembered after a failure, want 0", n)
	}
	clk.set(nbf.Add(-Leeway))
	if _, err := v.Verify(tok); err != nil {
		t.Fatalf("Verify() at nbf-leeway = %v", err)
	}
	clk.set(nbf.Add(-Leeway - time.Nanosecond))
	if _, err := v.Verify(tok); !errors.Is(err, jwt.ErrTokenNotValidYet) {
		t.Errorf("Verify() of a remembered token before nbf-leeway = %v, want %v", err, jwt.ErrTokenNotValidYet)
	}
}

// TestVerifierForgetsNothingWrong: failures are not remembered, and a token
// that differs from a remembered one in its signature alone fails.
func TestVerifierForgetsNothingWrong(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := NewVerifier(testKeys())
	good := sign(t, jwt.SigningMethodHS256, goodClaims(now), []byte(testSecret))
	if _, err := v.Verify(good); err != nil {
		t.Fatalf("Verify(good) = %v", err)
	}
	forged := sign(t, jwt.SigningMethodHS256, goodClaims(now), []byte("another secret, 32 bytes or more"))
	for i := range 2 {
		if _, err := v.Verify(forged); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			t.Errorf("Verify(forged) #%d = %v, want %v", i+1, err, jwt.ErrTokenSignatureInvalid)
		}
	}
	if n := v.verified.len(); n != 1 {
		t.Errorf("%d tokens remembered, want 1 (the good one)", n)
	}
}

// TestVerifierMemoryIsBounded: past its size the cache drops the least
// recently used tokens, which then verify again from scratch.
func TestVerifierMemoryIsBounded(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := NewVerifier(testKeys())
	v.verified = newVerifiedCache(3)
	var toks []string
	for i := range 5 {
		c := goodClaims(now)
		c.Subject = fmt.Sprintf("user%d", i)
		toks = append(toks, sign(t, jwt.SigningMethodHS256, c, []byte(testSecret)))
	}
	for round := range 2 {
		for i, tok := range toks {
			c, err := v.Verify(tok)
			if err != nil || c.Subject != fmt.Sprintf("user%d", i) {
				t.Fatalf("round %d: Verify(token %d) = %v, %v", round, i, c, err)
			}
		}
	}
	if n := v.verified.len(); n != 3 {
		t.Errorf("%d tokens remembered, want the bound, 3", n)
	}
}

// TestVerifierConcurrent verifies the same tokens from many goroutines (run
// with -race).
func TestVerifierConcurrent(t *testing.T) {
	t.Parallel()
	now := time.Now()
	v := NewVerifier(testKeys())
	v.verified = newVerifiedCache(2)
	var toks []string
	for i := range 4 {
		c := goodClaims(now)
		c.Subject = fmt.Sprintf("user%d", i)
		toks = append(toks, sign(t, jwt.SigningMethodHS256, c, []byte(testSecret)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(toks)
				if c, err := v.Verify(toks[k]); err != nil || c.Subject != fmt.Sprintf("user%d", k) {
					t.Errorf("Verify(token %d) = %v, %v", k, c, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestVerifierKeepsOnlyTheToken: a remembered token does not pin the
// (possibly huge) string it was sliced from, such as all of a request's
// header values.
func TestVerifierKeepsOnlyTheToken(t *testing.T) {
	t.Parallel()
	v := NewVerifier(testKeys())
	tok := sign(t, jwt.SigningMethodHS256, goodClaims(time.Now()), []byte(testSecret))
	headers := strings.Repeat("h", 1<<20) + tok
	if _, err := v.Verify(headers[len(headers)-len(tok):]); err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	keys := v.verified.lru.Keys()
	if len(keys) != 1 || keys[0] != tok {
		t.Fatalf("remembered %d tokens, want the one", len(keys))
	}
	start := uintptr(unsafe.Pointer(unsafe.StringData(headers)))
	at := uintptr(unsafe.Pointer(unsafe.StringData(keys[0])))
	if at >= start && at < start+uintptr(len(headers)) {
		t.Error("the remembered token shares the memory of the string it was sliced from")
	}
}
