package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
)

// verify runs an Authorization header value through FromHeader and Verify,
// as the gateway does.
func verify(v *auth.Verifier, header string) (*auth.Claims, error) {
	tok, ok := auth.FromHeader(header)
	if !ok {
		return nil, errors.New("no token in the header")
	}
	return v.Verify(tok)
}

// TestVerifyBadTokens is issue #6's table of bad tokens; the gateway's
// TestAuthBadTokens sends the same table over HTTP.
func TestVerifyBadTokens(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	now := time.Now()
	full, hsOnly := auth.NewVerifier(f.Keys), auth.NewVerifier(f.HSOnly)
	cases := f.Bad(t, now)
	if len(cases) < 20 {
		t.Fatalf("Bad() has %d cases, want at least 20", len(cases))
	}
	// One after the other, not in parallel: the tokens are made for now,
	// and parallel subtests can wait for a free slot for longer than a
	// token's time window.
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			v := full
			if tc.HSOnly {
				v = hsOnly
			}
			got, err := verify(v, tc.Header)
			if err == nil || got != nil {
				t.Errorf("verify(%.60q…) = %+v, %v, want nil and an error", tc.Header, got, err)
			}
			if tok, ok := auth.FromHeader(tc.Header); ok && !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("Verify(%.60q…) = %v, want it to wrap %v", tok, err, auth.ErrInvalidToken)
			}
		})
	}
}

func TestVerifyGoodTokens(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	now := time.Now()
	full, hsOnly := auth.NewVerifier(f.Keys), auth.NewVerifier(f.HSOnly)
	// One after the other, as in TestVerifyBadTokens.
	for _, tc := range f.Good(t, now) {
		t.Run(tc.Name, func(t *testing.T) {
			v := full
			if tc.HSOnly {
				v = hsOnly
			}
			got, err := verify(v, tc.Header)
			if err != nil {
				t.Fatalf("verify(%.60q…) = %v, want nil", tc.Header, err)
			}
			if got.Subject != "tester" || !got.HasScope(auth.ScopeTasksWrite) {
				t.Errorf("verify(%.60q…) claims = %+v, want sub tester with every scope", tc.Header, got)
			}
		})
	}
}

// TestVerifyReasons checks that failures stay distinguishable, which the
// gateway's error messages rely on.
func TestVerifyReasons(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	now := time.Now()
	v := auth.NewVerifier(f.Keys)
	expired := authtest.Claims(now)
	expired.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"unknown kid", authtest.Sign(t, jwt.SigningMethodEdDSA, authtest.Claims(now), f.Ed1.Key, map[string]any{"kid": "nope"}), auth.ErrUnknownKey},
		{"no kid", authtest.Sign(t, jwt.SigningMethodRS256, authtest.Claims(now), f.RSA.Key, nil), auth.ErrUnknownKey},
		{"kid of another alg", authtest.Sign(t, jwt.SigningMethodEdDSA, authtest.Claims(now), f.Ed1.Key, map[string]any{"kid": authtest.KidRSA}), auth.ErrUnknownKey},
		{"typ", authtest.Sign(t, jwt.SigningMethodHS256, authtest.Claims(now), []byte(authtest.Secret), map[string]any{"typ": "JWE"}), auth.ErrBadHeader},
		{"alg not allowed", authtest.Sign(t, jwt.SigningMethodHS512, authtest.Claims(now), []byte(authtest.Secret), nil), jwt.ErrTokenSignatureInvalid},
		{"expired RS256", authtest.Sign(t, jwt.SigningMethodRS256, expired, f.RSA.Key, map[string]any{"kid": authtest.KidRSA}), jwt.ErrTokenExpired},
		{"alg none", authtest.Seg(`{"alg":"none"}`) + "." + authtest.Seg(`{"sub":"x"}`) + ".", jwt.ErrTokenSignatureInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := v.Verify(tt.token)
			if !errors.Is(err, tt.want) || !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("Verify() = %v, want it to wrap %v and %v", err, tt.want, auth.ErrInvalidToken)
			}
		})
	}
}

// TestVerifierWithoutValidSecret: a verifier built from a short secret,
// bypassing Validate, still never accepts an HMAC under it.
func TestVerifierWithoutValidSecret(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{"", "short"} {
		keys := auth.Keys{Secret: []byte(secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
		tok := authtest.Sign(t, jwt.SigningMethodHS256, authtest.Claims(time.Now()), []byte(secret), nil)
		if _, err := auth.NewVerifier(keys).Verify(tok); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("Verify() with secret %q = %v, want %v", secret, err, auth.ErrInvalidToken)
		}
	}
}

func TestAlgorithms(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	if got, want := strings.Join(f.HSOnly.Algorithms(), " "), "HS256"; got != want {
		t.Errorf("HSOnly.Algorithms() = %q, want %q", got, want)
	}
	if got, want := strings.Join(f.Keys.Algorithms(), " "), "HS256 EdDSA RS256"; got != want {
		t.Errorf("Keys.Algorithms() = %q, want %q", got, want)
	}
}
