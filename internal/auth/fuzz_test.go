package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzKeys is testKeys with a JWKS of two Ed25519 keys and a fresh RSA key
// (kid fz-rsa). The Ed25519 keys come from fixed seeds, so that committed
// corpus entries signed with them (kid fz-ed-1, fz-ed-2) verify in every
// run.
func fuzzKeys(f *testing.F) (Keys, map[string]SigningKey) {
	keys := testKeys()
	signers := map[string]SigningKey{}
	seeds := map[string]string{"fz-ed-1": "scalelab-fuzz-ed25519-seed-no-1", "fz-ed-2": "scalelab-fuzz-ed25519-seed-no-2"}
	for kid, seed := range seeds {
		var b [ed25519.SeedSize]byte
		copy(b[:], seed)
		signers[kid] = SigningKey{ID: kid, Key: ed25519.NewKeyFromSeed(b[:])}
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatalf("rsa.GenerateKey() = %v", err)
	}
	signers["fz-rsa"] = SigningKey{ID: "fz-rsa", Key: rsaKey}
	for _, kid := range []string{"fz-ed-1", "fz-ed-2", "fz-rsa"} {
		pk, err := signers[kid].Public()
		if err != nil {
			f.Fatalf("Public(%s) = %v", kid, err)
		}
		keys.PublicKeys = append(keys.PublicKeys, pk)
	}
	return keys, signers
}

// FuzzVerify checks that Verify never panics and that every token it accepts
// is one a key holder could have issued: an allowed algorithm, a signature
// that checks out, computed here with the crypto packages directly, under
// the secret (HS256) or the JWKS key its kid names (EdDSA, RS256), and the
// required claims.
func FuzzVerify(f *testing.F) {
	keys, signers := fuzzKeys(f)
	now := time.Now()
	valid, _, err := keys.Issue("alice", AllScopes, time.Hour, now)
	if err != nil {
		f.Fatalf("Issue() = %v", err)
	}
	parts := strings.Split(valid, ".")
	f.Add(valid)
	for _, kid := range []string{"fz-ed-1", "fz-ed-2", "fz-rsa"} {
		tok, _, err := keys.IssueWith(signers[kid], "alice", AllScopes, time.Hour, now)
		if err != nil {
			f.Fatalf("IssueWith(%s) = %v", kid, err)
		}
		f.Add(tok)
	}
	f.Add(seg(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + ".")
	f.Add(seg(`{"alg":"HS384","typ":"JWT"}`) + "." + parts[1] + "." + parts[2])
	f.Add(seg(`{"alg":"EdDSA","kid":"fz-rsa"}`) + "." + parts[1] + "." + parts[2])
	f.Add("garbage")
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJ.eyJ.")

	public := map[string]PublicKey{}
	for _, pk := range keys.PublicKeys {
		public[pk.ID] = pk
	}
	v := NewVerifier(keys)
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(token)
		if err != nil {
			if claims != nil {
				t.Errorf("Verify(%q) = %+v, %v, want nil claims with an error", token, claims, err)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify(%q) = %v, want it to wrap %v", token, err, ErrInvalidToken)
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
		rawHeader, err := base64.RawURLEncoding.Strict().DecodeString(segs[0])
		if err != nil {
			t.Fatalf("Verify(%q) accepted a header that is not canonical base64url: %v", token, err)
		}
		var header struct {
			Alg string `json:"alg"`
			Kid string `json:"kid"`
		}
		if err := json.Unmarshal(rawHeader, &header); err != nil {
			t.Fatalf("Verify(%q) accepted header %q that is not JSON: %v", token, rawHeader, err)
		}
		sig, err := base64.RawURLEncoding.Strict().DecodeString(segs[2])
		if err != nil {
			t.Fatalf("Verify(%q) accepted a signature that is not canonical base64url: %v", token, err)
		}
		signed := []byte(segs[0] + "." + segs[1])
		switch header.Alg {
		case AlgHS256:
			mac := hmac.New(sha256.New, keys.Secret)
			mac.Write(signed)
			if !hmac.Equal(sig, mac.Sum(nil)) {
				t.Errorf("Verify(%q) accepted a signature that is not HMAC-SHA256 under the secret", token)
			}
		case AlgEdDSA:
			pk, ok := public[header.Kid]
			edKey, isEd := pk.Key.(ed25519.PublicKey)
			if !ok || !isEd || !ed25519.Verify(edKey, signed, sig) {
				t.Errorf("Verify(%q) accepted an EdDSA token not signed by the Ed25519 key of kid %q", token, header.Kid)
			}
		case AlgRS256:
			pk, ok := public[header.Kid]
			rsaKey, isRSA := pk.Key.(*rsa.PublicKey)
			digest := sha256.Sum256(signed)
			if !ok || !isRSA || rsa.VerifyPKCS1v15(rsaKey, crypto.SHA256, digest[:], sig) != nil {
				t.Errorf("Verify(%q) accepted an RS256 token not signed by the RSA key of kid %q", token, header.Kid)
			}
		default:
			t.Errorf("Verify(%q) accepted alg %q, want only HS256, EdDSA or RS256", token, header.Alg)
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
		now := time.Now()
		if claims.ExpiresAt == nil || now.After(claims.ExpiresAt.Add(leeway)) {
			t.Errorf("Verify(%q) accepted exp %v, want a future one", token, claims.ExpiresAt)
		}
		if claims.NotBefore != nil && now.Before(claims.NotBefore.Add(-leeway)) {
			t.Errorf("Verify(%q) accepted nbf %v, want a past one", token, claims.NotBefore)
		}
		if claims.IssuedAt != nil && now.Before(claims.IssuedAt.Add(-leeway)) {
			t.Errorf("Verify(%q) accepted iat %v, want a past one", token, claims.IssuedAt)
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
