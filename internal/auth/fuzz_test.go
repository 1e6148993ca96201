package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzVerify checks that Verify never panics and that every token it accepts
// is one the key holder could have issued: an HS256 header, a signature that
// is the HMAC-SHA256 of the signed part under the secret, and the required
// claims.
func FuzzVerify(f *testing.F) {
	keys := testKeys()
	valid, _, err := keys.Issue("alice", AllScopes, time.Hour, time.Now())
	if err != nil {
		f.Fatalf("Issue() = %v", err)
	}
	parts := strings.Split(valid, ".")
	f.Add(valid)
	f.Add(seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".")
	f.Add(seg(`{"alg":"HS384","typ":"JWT"}`) + "." + parts[1] + "." + parts[2])
	f.Add("garbage")
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJ.eyJ.")

	v := NewVerifier(keys)
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(token)
		if err != nil {
			if claims != nil {
				t.Errorf("Verify(%q) = %+v, %v, want nil claims with an error", token, claims, err)
			}
			return
		}
		if len(token) > maxTokenBytes {
			t.Errorf("Verify(%d-byte token) = nil, want an error over %d bytes", len(token), maxTokenBytes)
		}
		segs := strings.Split(token, ".")
		if len(segs) != 3 {
			t.Fatalf("Verify(%q) accepted a token of %d segments", token, len(segs))
		}
		rawHeader, err := base64.RawURLEncoding.DecodeString(segs[0])
		if err != nil {
			t.Fatalf("Verify(%q) accepted a header that is not base64url: %v", token, err)
		}
		var header struct {
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(rawHeader, &header); err != nil {
			t.Fatalf("Verify(%q) accepted header %q that is not JSON: %v", token, rawHeader, err)
		}
		if header.Alg != "HS256" {
			t.Errorf("Verify(%q) accepted alg %q, want only HS256", token, header.Alg)
		}
		sig, err := base64.RawURLEncoding.DecodeString(segs[2])
		if err != nil {
			t.Fatalf("Verify(%q) accepted a signature that is not base64url: %v", token, err)
		}
		mac := hmac.New(sha256.New, keys.Secret)
		mac.Write([]byte(segs[0] + "." + segs[1]))
		if !hmac.Equal(sig, mac.Sum(nil)) {
			t.Errorf("Verify(%q) accepted a signature that is not HMAC-SHA256 under the secret", token)
		}
		if claims == nil {
			t.Fatalf("Verify(%q) = nil, nil, want claims", token)
		}
		if claims.Subject == "" {
			t.Errorf("Verify(%q) accepted a token without sub", token)
		}
		if claims.Issuer != keys.Issuer {
			t.Errorf("Verify(%q) accepted iss %q, want %q", token, claims.Issuer, keys.Issuer)
		}
		if !slices.Contains(claims.Audience, keys.Audience) {
			t.Errorf("Verify(%q) accepted aud %q, want it to contain %q", token, claims.Audience, keys.Audience)
		}
		if claims.ExpiresAt == nil || time.Now().After(claims.ExpiresAt.Add(leeway)) {
			t.Errorf("Verify(%q) accepted exp %v, want a future one", token, claims.ExpiresAt)
		}
	})
}

// FuzzFromHeader checks that FromHeader never panics and that what it returns
// is a trimmed, non-empty token that survives a round trip through a Bearer
// header.
func FuzzFromHeader(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer abc", "abc", "Basic x", "", "   ", "Bearer ", "Bearer  a b "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := FromHeader(h)
		if !ok {
			if tok != "" {
				t.Errorf("FromHeader(%q) = %q, false, want an empty token when not ok", h, tok)
			}
			return
		}
		if tok == "" {
			t.Errorf("FromHeader(%q) = \"\", true, want a non-empty token", h)
		}
		if strings.TrimSpace(tok) != tok {
			t.Errorf("FromHeader(%q) = %q, want no surrounding space", h, tok)
		}
		if !strings.Contains(h, tok) {
			t.Errorf("FromHeader(%q) = %q, want a substring of the header", h, tok)
		}
		if got, ok := FromHeader("Bearer " + tok); got != tok || !ok {
			t.Errorf("FromHeader(%q) = %q, %v, want %q, true", "Bearer "+tok, got, ok, tok)
		}
		if scheme, _, found := strings.Cut(strings.TrimSpace(h), " "); found && !strings.EqualFold(scheme, "Bearer") {
			t.Errorf("FromHeader(%q) = %q, true, want scheme %q refused", h, tok, scheme)
		}
	})
}
