package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

// testSecret is 32 bytes, the shortest key Validate accepts.
const testSecret = "0123456789abcdef0123456789abcdef"

func testKeys() Keys {
	return Keys{Secret: []byte(testSecret), Issuer: DefaultIssuer, Audience: DefaultAudience}
}

// sign signs claims with method and key, failing the test on error.
func sign(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("SignedString(%s) = %v", method.Alg(), err)
	}
	return s
}

// goodClaims returns claims that verify with testKeys, valid for an hour.
func goodClaims(now time.Time) Claims {
	return Claims{
		Scope: ScopeDataRead,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "alice",
			Issuer:    DefaultIssuer,
			Audience:  jwt.ClaimStrings{DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
	}
}

func seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestIssueVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	now := time.Now().Truncate(time.Second)
	tok, exp, err := keys.Issue("alice", []string{ScopeDataRead, ScopeTasksWrite}, 15*time.Minute, now)
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	if want := now.Add(15 * time.Minute); !exp.Equal(want) {
		t.Errorf("Issue() expiry = %v, want %v", exp, want)
	}
	got, err := NewVerifier(keys).Verify(tok)
	if err != nil {
		t.Fatalf("Verify(Issue()) = %v, want nil", err)
	}
	want := &Claims{
		Scope: "data:read tasks:write",
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "alice",
			Issuer:    DefaultIssuer,
			Audience:  jwt.ClaimStrings{DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Verify(Issue()) claims mismatch (-want +got):\n%s", diff)
	}
	header := strings.Split(tok, ".")[0]
	raw, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("decode header %q: %v", header, err)
	}
	var h struct{ Alg, Typ string }
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("unmarshal header %s: %v", raw, err)
	}
	if h.Alg != "HS256" {
		t.Errorf("Issue() header alg = %q, want HS256", h.Alg)
	}
}

func TestIssueCustomIssuerAudience(t *testing.T) {
	t.Parallel()
	keys := Keys{Secret: []byte(testSecret), Issuer: "other-iss", Audience: "other-aud"}
	tok, _, err := keys.Issue("bob", nil, time.Minute, time.Now())
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	if _, err := NewVerifier(keys).Verify(tok); err != nil {
		t.Errorf("Verify() with matching custom iss/aud = %v, want nil", err)
	}
	if _, err := NewVerifier(testKeys()).Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("Verify() with default iss/aud = %v, want %v", err, ErrInvalidToken)
	}
}

func TestVerifyLeeway(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	v := NewVerifier(keys)
	now := time.Now()
	tests := []struct {
		name    string
		issued  time.Time
		ttl     time.Duration
		wantErr bool
	}{
		{"expired 10s ago, within leeway", now.Add(-time.Minute), 50 * time.Second, false},
		{"iat 10s in the future, within leeway", now.Add(10 * time.Second), time.Hour, false},
		{"expired 2m ago, beyond leeway", now.Add(-time.Hour), time.Hour - 2*time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, _, err := keys.Issue("alice", nil, tt.ttl, tt.issued)
			if err != nil {
				t.Fatalf("Issue() = %v", err)
			}
			_, err = v.Verify(tok)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("Verify() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify() = %v, want it to wrap %v", err, ErrInvalidToken)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	secret := []byte(testSecret)
	now := time.Now()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("rsa.GenerateKey() = %v", err)
	}
	with := func(edit func(*Claims)) Claims {
		c := goodClaims(now)
		edit(&c)
		return c
	}
	valid := sign(t, jwt.SigningMethodHS256, goodClaims(now), secret)
	parts := strings.Split(valid, ".")

	tests := []struct {
		name  string
		token string
	}{
		{"expired beyond leeway", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute))
		}), secret)},
		{"nbf in the future", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(5 * time.Minute))
		}), secret)},
		{"iat in the future", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(5 * time.Minute))
		}), secret)},
		{"wrong iss", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Issuer = "evil" }), secret)},
		{"no iss", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Issuer = "" }), secret)},
		{"wrong aud", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Audience = jwt.ClaimStrings{"other-api"} }), secret)},
		{"no aud", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Audience = nil }), secret)},
		{"no exp", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.ExpiresAt = nil }), secret)},
		{"no sub", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Subject = "" }), secret)},
		{"other key", sign(t, jwt.SigningMethodHS256, goodClaims(now), []byte("another-secret-another-secret-!!"))},
		{"alg none, hand-built", seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "."},
		{"alg none with the valid signature", seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2]},
		{"alg NONE", seg(`{"alg":"NONE","typ":"JWT"}`) + "." + parts[1] + "."},
		{"HS384 with the right key", sign(t, jwt.SigningMethodHS384, goodClaims(now), secret)},
		{"HS512 with the right key", sign(t, jwt.SigningMethodHS512, goodClaims(now), secret)},
		{"RS256, algorithm confusion", sign(t, jwt.SigningMethodRS256, goodClaims(now), rsaKey)},
		{"header says HS256, claims swapped", parts[0] + "." + seg(`{"sub":"mallory","iss":"scalelab","aud":"scalelab-api","exp":9999999999}`) + "." + parts[2]},
		{"truncated", valid[:len(valid)-5]},
		{"no signature", parts[0] + "." + parts[1] + "."},
		{"two segments", parts[0] + "." + parts[1]},
		{"extra segment", valid + "." + parts[2]},
		{"garbage base64", "!!!." + parts[1] + "." + parts[2]},
		{"garbage", "not-a-token"},
		{"huge", sign(t, jwt.SigningMethodHS256, with(func(c *Claims) { c.Scope = strings.Repeat("x ", 5<<10) }), secret)},
		{"empty", ""},
		{"dots only", ".."},
	}
	v := NewVerifier(keys)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(tt.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify(%.40q…) = %v, want an error wrapping %v", tt.token, err, ErrInvalidToken)
			}
			if got != nil {
				t.Errorf("Verify(%.40q…) claims = %+v, want nil", tt.token, got)
			}
		})
	}
}

// TestVerifyHugeIsRejectedForLength makes sure the "huge" case above fails
// because of the size bound, not something else.
func TestVerifyHugeIsRejectedForLength(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	now := time.Now()
	small := goodClaims(now)
	small.Scope = strings.Repeat("x ", 1<<10)
	big := goodClaims(now)
	big.Scope = strings.Repeat("x ", 5<<10)
	v := NewVerifier(keys)
	if tok := sign(t, jwt.SigningMethodHS256, small, keys.Secret); len(tok) > maxTokenBytes {
		t.Fatalf("small token is %d bytes, want <= %d", len(tok), maxTokenBytes)
	} else if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify(%d-byte token) = %v, want nil", len(tok), err)
	}
	tok := sign(t, jwt.SigningMethodHS256, big, keys.Secret)
	if len(tok) <= maxTokenBytes {
		t.Fatalf("big token is %d bytes, want > %d", len(tok), maxTokenBytes)
	}
	_, err := v.Verify(tok)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("Verify(%d-byte token) = %v, want a length error", len(tok), err)
	}
}

func TestFromHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		want   string
		wantOK bool
	}{
		{"bearer", "Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer lowercase", "bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer uppercase", "BEARER abc.def.ghi", "abc.def.ghi", true},
		{"bare token", "abc.def.ghi", "abc.def.ghi", true},
		{"bare token with spaces around", "  abc.def.ghi \t", "abc.def.ghi", true},
		{"bearer with extra spaces", "  Bearer    abc.def.ghi  ", "abc.def.ghi", true},
		{"basic", "Basic dXNlcjpwYXNz", "", false},
		{"basic x", "Basic x", "", false},
		{"other scheme", "Token abc", "", false},
		{"empty", "", "", false},
		{"spaces only", "   ", "", false},
		{name: "bearer without token", header: "Bearer "},
		{name: "bearer followed by spaces", header: "Bearer     "},
		{name: "bearer alone", header: "Bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := FromHeader(tt.header)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("FromHeader(%q) = %q, %v, want %q, %v", tt.header, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestKeysValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		keys    Keys
		wantErr string // substring; "" means valid
	}{
		{"valid", testKeys(), ""},
		{"empty secret", Keys{Issuer: "i", Audience: "a"}, "SCALELAB_JWT_SECRET is required"},
		{"short secret", Keys{Secret: []byte("short"), Issuer: "i", Audience: "a"}, "at least 32 bytes, got 5"},
		{"31 bytes", Keys{Secret: []byte(testSecret[:31]), Issuer: "i", Audience: "a"}, "got 31"},
		{"no issuer", Keys{Secret: []byte(testSecret), Audience: "a"}, "issuer and audience"},
		{"no audience", Keys{Secret: []byte(testSecret), Issuer: "i"}, "issuer and audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.keys.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestHasScopeAllocs: the scope check runs on every request and must not
// allocate (strings.Fields did, a slice per call).
func TestHasScopeAllocs(t *testing.T) {
	c := &Claims{Scope: "data:read items:read tasks:write"}
	if n := testing.AllocsPerRun(100, func() { c.HasScope("tasks:write") }); n != 0 {
		t.Errorf("HasScope allocates %.0f times per call, want 0", n)
	}
}

func TestHasScope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		scope string
		ask   string
		want  bool
	}{
		{"data:read items:read", "data:read", true},
		{"data:read items:read", "items:read", true},
		{"data:read  items:read ", "items:read", true},
		{"data:read items:read", "items:write", false},
		{"data:readx", "data:read", false},
		{"data:read", "data", false},
		{"", "data:read", false},
		{"data:read", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.scope+"/"+tt.ask, func(t *testing.T) {
			t.Parallel()
			c := &Claims{Scope: tt.scope}
			if got := c.HasScope(tt.ask); got != tt.want {
				t.Errorf("Claims{Scope: %q}.HasScope(%q) = %v, want %v", tt.scope, tt.ask, got, tt.want)
			}
		})
	}
}

func TestKeysFromEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want Keys
	}{
		{"empty", nil, Keys{Secret: []byte{}, Issuer: DefaultIssuer, Audience: DefaultAudience}},
		{"secret only", map[string]string{"SCALELAB_JWT_SECRET": testSecret},
			Keys{Secret: []byte(testSecret), Issuer: DefaultIssuer, Audience: DefaultAudience}},
		{"all set", map[string]string{"SCALELAB_JWT_SECRET": "s", "SCALELAB_JWT_ISSUER": "iss", "SCALELAB_JWT_AUDIENCE": "aud"},
			Keys{Secret: []byte("s"), Issuer: "iss", Audience: "aud"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := KeysFromEnv(func(k string) string { return tt.env[k] })
			// AllowUnexported: a nil load error is part of the expectation.
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Keys{})); diff != "" {
				t.Errorf("KeysFromEnv() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRandomSecret(t *testing.T) {
	t.Parallel()
	a, err := RandomSecret()
	if err != nil {
		t.Fatalf("RandomSecret() = %v", err)
	}
	b, err := RandomSecret()
	if err != nil {
		t.Fatalf("RandomSecret() = %v", err)
	}
	if len(a) != 43 {
		t.Errorf("len(RandomSecret()) = %d, want 43", len(a))
	}
	if a == b {
		t.Errorf("RandomSecret() returned %q twice", a)
	}
	if err := (Keys{Secret: []byte(a), Issuer: "i", Audience: "a"}).Validate(); err != nil {
		t.Errorf("Keys{Secret: RandomSecret()}.Validate() = %v, want nil", err)
	}
}
