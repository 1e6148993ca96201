// Package auth issues and verifies the platform's JSON Web Tokens.
//
// Tokens are HS256-signed, carry sub, iat, exp (required), iss, aud and an
// OAuth-style space-separated scope claim. Verification allows HS256 only, so
// alg:none and algorithm-confusion tokens are rejected by the parser itself.
package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Defaults for the iss and aud claims (DESIGN.md).
const (
	DefaultIssuer   = "scalelab"
	DefaultAudience = "scalelab-api"
	// MinSecretBytes is the shortest HS256 key accepted: shorter keys can be
	// brute-forced from one captured token.
	MinSecretBytes = 32
	// leeway absorbs clock skew between the issuer and the gateways.
	leeway = 30 * time.Second
)

// Scopes a token may carry; routes require one of them.
const (
	ScopeDataRead   = "data:read"
	ScopeItemsRead  = "items:read"
	ScopeItemsWrite = "items:write"
	ScopeTasksRead  = "tasks:read"
	ScopeTasksWrite = "tasks:write"
)

// AllScopes is every scope, as granted to the dev token that `up` prints.
var AllScopes = []string{ScopeDataRead, ScopeItemsRead, ScopeItemsWrite, ScopeTasksRead, ScopeTasksWrite}

// ErrInvalidToken is returned (wrapped) for every token that does not verify.
var ErrInvalidToken = errors.New("auth: invalid token")

// Claims are the claims of a scalelab token.
type Claims struct {
	Scope string `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool {
	return slices.Contains(strings.Fields(c.Scope), scope)
}

// Keys is the HS256 key material and the expected iss and aud.
type Keys struct {
	Secret   []byte
	Issuer   string
	Audience string
}

// Validate reports a missing or short secret.
func (k Keys) Validate() error {
	if len(k.Secret) < MinSecretBytes {
		if len(k.Secret) == 0 {
			return errors.New("SCALELAB_JWT_SECRET is required")
		}
		return fmt.Errorf("SCALELAB_JWT_SECRET must be at least %d bytes, got %d", MinSecretBytes, len(k.Secret))
	}
	if k.Issuer == "" || k.Audience == "" {
		return errors.New("JWT issuer and audience must not be empty")
	}
	return nil
}

// Issue signs a token for sub with the given scopes, valid for ttl from now.
// It returns the token and its expiry.
func (k Keys) Issue(sub string, scopes []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	exp := now.Add(ttl)
	claims := Claims{
		Scope: strings.Join(scopes, " "),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			Issuer:    k.Issuer,
			Audience:  jwt.ClaimStrings{k.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token for %s: %w", sub, err)
	}
	return s, exp, nil
}

// Verifier checks tokens against one set of keys.
type Verifier struct {
	keys   Keys
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for keys.
func NewVerifier(keys Keys) *Verifier {
	return &Verifier{
		keys: keys,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithIssuer(keys.Issuer),
			jwt.WithAudience(keys.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(leeway),
		),
	}
}

// maxTokenBytes bounds the work done on a hostile Authorization header.
const maxTokenBytes = 8 << 10

// Verify parses and verifies a token. Every failure wraps ErrInvalidToken.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("%w: token is longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.keys.Secret, nil })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.Subject == "" {
		return nil, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	return &claims, nil
}

// FromHeader extracts the token from an Authorization header value. Both
// "Bearer <jwt>" and the lab's bare "<jwt>" are accepted.
func FromHeader(h string) (string, bool) {
	h = strings.TrimSpace(h)
	scheme, rest, hasScheme := strings.Cut(h, " ")
	switch {
	case hasScheme:
		if !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		h = strings.TrimSpace(rest)
	case strings.EqualFold(h, "Bearer"):
		return "", false // a scheme with no token
	}
	return h, h != ""
}

// RandomSecret returns a new random secret for dev mode, base64url encoded
// (43 characters, 32 bytes of entropy).
func RandomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// KeysFromEnv reads SCALELAB_JWT_SECRET, SCALELAB_JWT_ISSUER and
// SCALELAB_JWT_AUDIENCE, defaulting iss and aud. Secrets come only from the
// environment, never from flags, which show in process listings.
func KeysFromEnv(getenv func(string) string) Keys {
	k := Keys{Secret: []byte(getenv("SCALELAB_JWT_SECRET")), Issuer: DefaultIssuer, Audience: DefaultAudience}
	if v := getenv("SCALELAB_JWT_ISSUER"); v != "" {
		k.Issuer = v
	}
	if v := getenv("SCALELAB_JWT_AUDIENCE"); v != "" {
		k.Audience = v
	}
	return k
}
