package authtest

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scalelab/scalelab/internal/auth"
)

// Secret is the fixture's HS256 secret: 32 bytes, the shortest accepted.
const Secret = "0123456789abcdef0123456789abcdef"

// Key ids in the fixture's JWKS.
const (
	KidEd1 = "ed-2025-01"
	KidEd2 = "ed-2025-02" // the rotated-in key: both must verify
	KidRSA = "rsa-2025-01"
)

// Fixture is a set of keys: an HS256 secret, two Ed25519 keys and an RSA
// key whose public halves are in Keys.PublicKeys, and keys that are not.
type Fixture struct {
	// Keys verifies HS256, and EdDSA and RS256 through the JWKS.
	Keys auth.Keys
	// HSOnly has the same secret and no JWKS.
	HSOnly auth.Keys
	// JWKS is Keys.PublicKeys as a JWKS file's content.
	JWKS []byte
	// Ed1, Ed2 and RSA sign tokens that Keys accepts.
	Ed1, Ed2, RSA auth.SigningKey
	// Stranger is an Ed25519 key that is in no JWKS.
	Stranger ed25519.PrivateKey
}

// New makes a fixture with fresh keys.
func New(t testing.TB) *Fixture {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("rsa.GenerateKey() = %v", err)
	}
	f := &Fixture{
		Ed1:      auth.SigningKey{ID: KidEd1, Key: newEd(t)},
		Ed2:      auth.SigningKey{ID: KidEd2, Key: newEd(t)},
		RSA:      auth.SigningKey{ID: KidRSA, Key: rsaKey},
		Stranger: newEd(t),
	}
	var pubs []auth.PublicKey
	for _, k := range []auth.SigningKey{f.Ed1, f.Ed2, f.RSA} {
		pk, err := k.Public()
		if err != nil {
			t.Fatalf("%s.Public() = %v", k.ID, err)
		}
		pubs = append(pubs, pk)
	}
	if f.JWKS, err = auth.MarshalJWKS(pubs); err != nil {
		t.Fatalf("MarshalJWKS() = %v", err)
	}
	f.HSOnly = auth.Keys{Secret: []byte(Secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	f.Keys = f.HSOnly
	f.Keys.PublicKeys = pubs
	return f
}

func newEd(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("ed25519.GenerateKey() = %v", err)
	}
	return k
}

// Claims returns claims that every fixture verifier accepts at now: all
// scopes, valid for an hour.
func Claims(now time.Time) auth.Claims {
	return auth.Claims{
		Scope: strings.Join(auth.AllScopes, " "),
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "tester",
			Issuer:    auth.DefaultIssuer,
			Audience:  jwt.ClaimStrings{auth.DefaultAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
	}
}

// Sign signs claims with method and key, with the header members in
// header added (a nil value deletes one, such as typ).
func Sign(t testing.TB, method jwt.SigningMethod, claims jwt.Claims, key any, header map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("SignedString(%s) = %v", method.Alg(), err)
	}
	return s
}

// Seg base64url-encodes s as one token segment.
func Seg(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// Case is one Authorization header value and the verifier it is meant for.
type Case struct {
	Name string
	// Header is the whole Authorization header value.
	Header string
	// HSOnly says the case targets a verifier for Fixture.HSOnly rather
	// than Fixture.Keys.
	HSOnly bool
}

// Bad returns Authorization header values, each of which the verifier it
// names must refuse at now (FromHeader finds no token, or Verify fails).
// None contains control characters, so each can be sent over HTTP as is.
func (f *Fixture) Bad(t testing.TB, now time.Time) []Case {
	t.Helper()
	secret := []byte(Secret)
	hs := func(edit func(*auth.Claims), header map[string]any) string {
		t.Helper()
		c := Claims(now)
		if edit != nil {
			edit(&c)
		}
		return Sign(t, jwt.SigningMethodHS256, c, secret, header)
	}
	good := Claims(now)
	valid := hs(nil, nil)
	parts := strings.Split(valid, ".")
	edValid := Sign(t, jwt.SigningMethodEdDSA, good, f.Ed1.Key, map[string]any{"kid": KidEd1})
	rsValid := Sign(t, jwt.SigningMethodRS256, good, f.RSA.Key, map[string]any{"kid": KidRSA})

	// The RSA public key as an attacker who read the JWKS would hold it.
	der, err := x509.MarshalPKIXPublicKey(f.RSA.Key.Public())
	if err != nil {
		t.Fatalf("MarshalPKIXPublicKey() = %v", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	edPub := []byte(f.Ed1.Key.Public().(ed25519.PublicKey))

	// The signature's last base64 character carries 4 bits; flipping one of
	// the unused low 2 bits gives a second spelling of the same bytes.
	sig := parts[2]
	last := strings.IndexByte(b64url, sig[len(sig)-1])
	malleable := parts[0] + "." + parts[1] + "." + sig[:len(sig)-1] + string(b64url[last^1])

	bearer := func(tok string) string { return "Bearer " + tok }
	cases := []Case{
		{Name: "expired beyond leeway", Header: bearer(hs(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-2 * auth.Leeway))
		}, nil))},
		{Name: "not valid yet (nbf beyond leeway)", Header: bearer(hs(func(c *auth.Claims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(2 * auth.Leeway))
		}, nil))},
		{Name: "iat in the future beyond leeway", Header: bearer(hs(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(2 * auth.Leeway))
		}, nil))},
		{Name: "wrong issuer", Header: bearer(hs(func(c *auth.Claims) { c.Issuer = "evil" }, nil))},
		{Name: "no issuer", Header: bearer(hs(func(c *auth.Claims) { c.Issuer = "" }, nil))},
		{Name: "wrong audience", Header: bearer(hs(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other-api"} }, nil))},
		{Name: "no audience", Header: bearer(hs(func(c *auth.Claims) { c.Audience = nil }, nil))},
		{Name: "no exp", Header: bearer(hs(func(c *auth.Claims) { c.ExpiresAt = nil }, nil))},
		{Name: "no sub", Header: bearer(hs(func(c *auth.Claims) { c.Subject = "" }, nil))},
		{Name: "HS256 with the wrong key", Header: bearer(Sign(t, jwt.SigningMethodHS256, good,
			[]byte("another-secret-another-secret-!!"), nil))},
		{Name: "alg none, unsigned", Header: bearer(Seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".")},
		{Name: "alg none with a signature", Header: bearer(Seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2])},
		{Name: "alg None, unsigned", Header: bearer(Seg(`{"alg":"None"}`) + "." + parts[1] + ".")},
		{Name: "no alg", Header: bearer(Seg(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2])},
		{Name: "HS384 with the right key", Header: bearer(Sign(t, jwt.SigningMethodHS384, good, secret, nil))},
		{Name: "HS256 keyed with the RSA public key PEM (confusion)", Header: bearer(Sign(t, jwt.SigningMethodHS256, good,
			pubPEM, map[string]any{"kid": KidRSA}))},
		{Name: "HS256 keyed with the RSA public key DER (confusion)", Header: bearer(Sign(t, jwt.SigningMethodHS256, good,
			der, map[string]any{"kid": KidRSA}))},
		{Name: "HS256 keyed with the Ed25519 public key (confusion)", Header: bearer(Sign(t, jwt.SigningMethodHS256, good,
			edPub, map[string]any{"kid": KidEd1}))},
		{Name: "PS256 with the JWKS RSA key", Header: bearer(Sign(t, jwt.SigningMethodPS256, good, f.RSA.Key,
			map[string]any{"kid": KidRSA}))},
		{Name: "EdDSA against an HS-only verifier", Header: bearer(edValid), HSOnly: true},
		{Name: "RS256 against an HS-only verifier", Header: bearer(rsValid), HSOnly: true},
		{Name: "EdDSA with an unknown kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Ed1.Key,
			map[string]any{"kid": "ed-unknown"}))},
		{Name: "EdDSA without kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Ed1.Key, nil))},
		{Name: "RS256 without kid", Header: bearer(Sign(t, jwt.SigningMethodRS256, good, f.RSA.Key, nil))},
		{Name: "EdDSA with a numeric kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Ed1.Key,
			map[string]any{"kid": 1}))},
		{Name: "EdDSA naming the RSA key's kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Ed1.Key,
			map[string]any{"kid": KidRSA}))},
		{Name: "RS256 naming an Ed25519 key's kid", Header: bearer(Sign(t, jwt.SigningMethodRS256, good, f.RSA.Key,
			map[string]any{"kid": KidEd1}))},
		{Name: "EdDSA by a stranger's key under a known kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Stranger,
			map[string]any{"kid": KidEd1}))},
		{Name: "EdDSA by the second key under the first kid", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, good, f.Ed2.Key,
			map[string]any{"kid": KidEd1}))},
		{Name: "RS256 expired", Header: bearer(Sign(t, jwt.SigningMethodRS256, func() auth.Claims {
			c := Claims(now)
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
			return c
		}(), f.RSA.Key, map[string]any{"kid": KidRSA}))},
		{Name: "EdDSA with the wrong audience", Header: bearer(Sign(t, jwt.SigningMethodEdDSA, func() auth.Claims {
			c := Claims(now)
			c.Audience = jwt.ClaimStrings{"other-api"}
			return c
		}(), f.Ed2.Key, map[string]any{"kid": KidEd2}))},
		{Name: "claims swapped under a valid signature", Header: bearer(parts[0] + "." +
			Seg(`{"sub":"mallory","scope":"items:write","iss":"scalelab","aud":"scalelab-api","exp":9999999999}`) + "." + parts[2])},
		{Name: "typ is not JWT", Header: bearer(hs(nil, map[string]any{"typ": "secevent+jwt"}))},
		{Name: "crit header", Header: bearer(hs(nil, map[string]any{"crit": []string{"b64"}, "b64": false}))},
		{Name: "signature with non-canonical base64", Header: bearer(malleable)},
		{Name: "truncated", Header: bearer(valid[:len(valid)-5])},
		{Name: "no signature", Header: bearer(parts[0] + "." + parts[1] + ".")},
		{Name: "two segments", Header: bearer(parts[0] + "." + parts[1])},
		{Name: "four segments", Header: bearer(valid + "." + parts[2])},
		{Name: "garbage base64 header", Header: bearer("!!!." + parts[1] + "." + parts[2])},
		{Name: "padded base64", Header: bearer(parts[0] + "=." + parts[1] + "." + parts[2])},
		{Name: "header is not JSON", Header: bearer(Seg("alg=HS256") + "." + parts[1] + "." + parts[2])},
		{Name: "garbage", Header: bearer("not-a-token")},
		{Name: "dots only", Header: bearer("..")},
		{Name: "huge (over the size cap)", Header: bearer(hs(func(c *auth.Claims) {
			c.Scope = strings.Repeat("x ", auth.MaxTokenBytes/2+16)
		}, nil))},
		{Name: "empty", Header: ""},
		{Name: "Bearer with nothing", Header: "Bearer"},
		{Name: "Bearer with a space inside the token", Header: "Bearer " + parts[0] + "." + parts[1] + ". " + parts[2]},
		{Name: "Bearer with two tokens", Header: "Bearer " + valid + " " + valid},
		{Name: "Basic scheme", Header: "Basic dXNlcjpwYXNz"},
		{Name: "Basic scheme with a valid token", Header: "Basic " + valid},
	}
	return cases
}

// b64url is the base64url alphabet, in value order.
const b64url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// Good returns Authorization header values that the verifier each names
// accepts at now, all with every scope.
func (f *Fixture) Good(t testing.TB, now time.Time) []Case {
	t.Helper()
	secret := []byte(Secret)
	good := Claims(now)
	hsTok, _, err := f.Keys.Issue("tester", auth.AllScopes, time.Hour, now)
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	issueWith := func(k auth.SigningKey) string {
		t.Helper()
		tok, _, err := f.Keys.IssueWith(k, "tester", auth.AllScopes, time.Hour, now)
		if err != nil {
			t.Fatalf("IssueWith(%s) = %v", k.ID, err)
		}
		return tok
	}
	skewed := Claims(now)
	skewed.IssuedAt = jwt.NewNumericDate(now.Add(auth.Leeway / 3))
	skewed.NotBefore = jwt.NewNumericDate(now.Add(auth.Leeway / 3))
	expiredInLeeway := Claims(now)
	expiredInLeeway.IssuedAt = jwt.NewNumericDate(now.Add(-time.Hour))
	expiredInLeeway.ExpiresAt = jwt.NewNumericDate(now.Add(-auth.Leeway / 3))
	return []Case{
		{Name: "HS256", Header: "Bearer " + hsTok},
		{Name: "HS256, HS-only verifier", Header: "Bearer " + hsTok, HSOnly: true},
		{Name: "HS256, the lab's bare header", Header: hsTok},
		{Name: "HS256, lowercase bearer and extra spaces", Header: "bearer    " + hsTok + "  "},
		{Name: "HS256 with no typ", Header: "Bearer " + Sign(t, jwt.SigningMethodHS256, good, secret, map[string]any{"typ": nil})},
		{Name: "HS256 with typ at+jwt", Header: "Bearer " + Sign(t, jwt.SigningMethodHS256, good, secret, map[string]any{"typ": "at+jwt"})},
		{Name: "HS256, iat and nbf ahead within leeway", Header: "Bearer " + Sign(t, jwt.SigningMethodHS256, skewed, secret, nil)},
		{Name: "HS256, expired within leeway", Header: "Bearer " + Sign(t, jwt.SigningMethodHS256, expiredInLeeway, secret, nil)},
		{Name: "EdDSA, first kid", Header: "Bearer " + issueWith(f.Ed1)},
		{Name: "EdDSA, rotated-in kid", Header: "Bearer " + issueWith(f.Ed2)},
		{Name: "RS256", Header: "Bearer " + issueWith(f.RSA)},
	}
}

// PrivatePEM encodes key as PKCS#8 PEM, as `openssl genpkey` writes it.
func PrivatePEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("MarshalPKCS8PrivateKey() = %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
