package auth

import (
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// verifiedTokens bounds how many verified tokens a Verifier remembers. A
// client sends the same token on every request, so a few thousand cover
// every client a gateway serves at once; an entry is about half a kilobyte.
const verifiedTokens = 4096

// verifiedToken is a token that passed Verify: its claims and the time
// window in which the parser accepts its exp, iat and nbf (leeway included).
type verifiedToken struct {
	claims *Claims
	from   time.Time // the latest of iat and nbf, minus the leeway
	until  time.Time // exp plus the leeway, excluded
}

// verifiedCache remembers tokens that passed Verify, keyed by the whole
// token. Parsing a token and checking its signature cost more CPU than the
// rest of a cached request (JSON decoding of header and claims, an HMAC or
// a public-key operation); with the cache a gateway pays it once per token
// instead of on every request.
//
// Keying by the whole token, signature included, means a hit is the very
// token that verified: change one byte and it misses. Nothing else about a
// verification can change while the Verifier lives (its keys, issuer and
// audience are fixed when it is made) except the time, so a hit is checked
// against the token's window and dropped when outside it. Failures are not
// remembered: they cost their full verification every time, as before.
type verifiedCache struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, verifiedToken]
}

func newVerifiedCache(size int) *verifiedCache {
	lru, err := simplelru.NewLRU[string, verifiedToken](size, nil)
	if err != nil {
		panic(err) // only for size <= 0, a programming error
	}
	return &verifiedCache{lru: lru}
}

// get returns the claims of token if it verified before and now is inside
// its window.
func (c *verifiedCache) get(token string, now time.Time) (*Claims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(token)
	if !ok {
		return nil, false
	}
	if now.Before(e.from) || !now.Before(e.until) {
		// Expired, or a clock that went back: verify again, which gives
		// the caller the parser's own error.
		c.lru.Remove(token)
		return nil, false
	}
	return e.claims, true
}

// add remembers a token that just verified with claims.
func (c *verifiedCache) add(token string, claims *Claims) {
	if claims.ExpiresAt == nil {
		return // the parser requires exp; never cache a token without one
	}
	e := verifiedToken{claims: claims, until: claims.ExpiresAt.Add(leeway)}
	for _, t := range []*jwt.NumericDate{claims.IssuedAt, claims.NotBefore} {
		if t != nil && t.Add(-leeway).After(e.from) {
			e.from = t.Add(-leeway)
		}
	}
	// A copy: the token is usually a slice of the string that holds all of
	// its request's header values, which could be a megabyte.
	token = strings.Clone(token)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Add(token, e)
}

// len returns how many tokens are remembered.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
