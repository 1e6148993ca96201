package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
)

// RFC 7638 §3.1's example RSA key and RFC 8037 A.2's Ed25519 key, with the
// thumbprints those RFCs give for them.
const (
	rfcRSAN          = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	rfcRSAThumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	rfcEdX           = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	rfcEdThumbprint  = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
)

func TestParseJWKS(t *testing.T) {
	t.Parallel()
	keys, err := auth.ParseJWKS([]byte(`{"keys":[
		{"kty":"RSA","kid":"r","n":"` + rfcRSAN + `","e":"AQAB","alg":"RS256","use":"sig"},
		{"kty":"OKP","kid":"e","crv":"Ed25519","x":"` + rfcEdX + `","key_ops":["verify"]}]}`))
	if err != nil {
		t.Fatalf("ParseJWKS() = %v", err)
	}
	if len(keys) != 2 || keys[0].ID != "r" || keys[0].Alg != auth.AlgRS256 || keys[1].ID != "e" || keys[1].Alg != auth.AlgEdDSA {
		t.Fatalf("ParseJWKS() = %+v, want r RS256 and e EdDSA", keys)
	}
	if got := keys[0].Key.(*rsa.PublicKey); got.E != 65537 || got.N.BitLen() != 2048 {
		t.Errorf("RSA key: e %d, %d bits, want 65537 and 2048", got.E, got.N.BitLen())
	}
	for i, want := range []string{rfcRSAThumbprint, rfcEdThumbprint} {
		if got, err := auth.Thumbprint(keys[i].Key); got != want || err != nil {
			t.Errorf("Thumbprint(%s) = %q, %v, want %q (RFC)", keys[i].ID, got, err, want)
		}
	}
}

func TestParseJWKSRejects(t *testing.T) {
	t.Parallel()
	ed := `"kty":"OKP","crv":"Ed25519","x":"` + rfcEdX + `"`
	rs := `"kty":"RSA","n":"` + rfcRSAN + `","e":"AQAB"`
	tests := []struct {
		name, jwks, want string
	}{
		{"not JSON", `keys`, "parse JWKS"},
		{"no keys", `{"keys":[]}`, "no keys"},
		{"no kid", `{"keys":[{` + ed + `}]}`, "no kid"},
		{"duplicate kid", `{"keys":[{"kid":"a",` + ed + `},{"kid":"a",` + rs + `}]}`, `kid "a" appears twice`},
		{"private Ed25519", `{"keys":[{"kid":"a",` + ed + `,"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`, "private key"},
		{"private RSA", `{"keys":[{"kid":"a",` + rs + `,"d":"AQAB"}]}`, "private key"},
		{"symmetric key", `{"keys":[{"kid":"a","kty":"oct","k":"c2VjcmV0"}]}`, "private key"},
		{"encryption key", `{"keys":[{"kid":"a",` + rs + `,"use":"enc"}]}`, `use "enc"`},
		{"key_ops without verify", `{"keys":[{"kid":"a",` + ed + `,"key_ops":["encrypt"]}]}`, "key_ops"},
		{"EC key", `{"keys":[{"kid":"a","kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`, `kty "EC"`},
		{"X25519 key", `{"keys":[{"kid":"a","kty":"OKP","crv":"X25519","x":"` + rfcEdX + `"}]}`, "X25519"},
		{"RSA key for PS256", `{"keys":[{"kid":"a",` + rs + `,"alg":"PS256"}]}`, `alg "PS256"`},
		{"Ed25519 key for HS256", `{"keys":[{"kid":"a",` + ed + `,"alg":"HS256"}]}`, `alg "HS256"`},
		{"short Ed25519 key", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`, "3 bytes"},
		{"padded x", `{"keys":[{"kid":"a","kty":"OKP","crv":"Ed25519","x":"` + rfcEdX + `="}]}`, "x:"},
		{"1032-bit RSA", `{"keys":[{"kid":"a","kty":"RSA","n":"` + rfcRSAN[:172] + `","e":"AQAB"}]}`, "bits"},
		{"even exponent", `{"keys":[{"kid":"a","kty":"RSA","n":"` + rfcRSAN + `","e":"Ag"}]}`, "exponent 2"},
		{"huge exponent", `{"keys":[{"kid":"a","kty":"RSA","n":"` + rfcRSAN + `","e":"AQEBAQE"}]}`, "e is 5 bytes"},
		{"no n", `{"keys":[{"kid":"a","kty":"RSA","e":"AQAB"}]}`, "n: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys, err := auth.ParseJWKS([]byte(tt.jwks))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseJWKS(%.60s…) = %v, want an error containing %q", tt.jwks, err, tt.want)
			}
			if keys != nil {
				t.Errorf("ParseJWKS(%.60s…) keys = %+v, want nil", tt.jwks, keys)
			}
		})
	}
}

// TestJWKSRoundTrip: what MarshalJWKS writes, ParseJWKS reads back, and a
// verifier built from it accepts tokens each private key signed.
func TestJWKSRoundTrip(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	keys, err := auth.ParseJWKS(f.JWKS)
	if err != nil {
		t.Fatalf("ParseJWKS(MarshalJWKS()) = %v", err)
	}
	if diff := cmp.Diff(f.Keys.PublicKeys, keys); diff != "" {
		t.Errorf("ParseJWKS(MarshalJWKS()) mismatch (-want +got):\n%s", diff)
	}
	if _, err := auth.MarshalJWKS([]auth.PublicKey{{ID: "x", Alg: auth.AlgRS256, Key: f.Ed1.Key.Public()}}); err == nil {
		t.Errorf("MarshalJWKS(Ed25519 key labelled RS256) = nil, want an error")
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKeysFromEnvFiles(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	secretFile := writeFile(t, "secret", []byte(authtest.Secret+"\n"))
	jwksFile := writeFile(t, "jwks.json", f.JWKS)
	badJWKS := writeFile(t, "bad.json", []byte(`{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}`))
	shortFile := writeFile(t, "short", []byte("short\r\n"))
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name       string
		env        map[string]string
		wantSecret string
		wantKids   []string
		wantErr    []string // substrings of Validate(); none means valid
	}{
		{"secret file, newline dropped", map[string]string{auth.EnvSecretFile: secretFile}, authtest.Secret, nil, nil},
		{"secret and JWKS files", map[string]string{auth.EnvSecretFile: secretFile, auth.EnvJWKSFile: jwksFile},
			authtest.Secret, []string{authtest.KidEd1, authtest.KidEd2, authtest.KidRSA}, nil},
		{"secret env and JWKS file", map[string]string{auth.EnvSecret: authtest.Secret, auth.EnvJWKSFile: jwksFile},
			authtest.Secret, []string{authtest.KidEd1, authtest.KidEd2, authtest.KidRSA}, nil},
		{"both secrets", map[string]string{auth.EnvSecret: authtest.Secret, auth.EnvSecretFile: secretFile},
			authtest.Secret, nil, []string{"not both"}},
		{"short secret file", map[string]string{auth.EnvSecretFile: shortFile}, "short", nil, []string{"at least 32 bytes, got 5"}},
		{"missing secret file", map[string]string{auth.EnvSecretFile: missing}, "", nil,
			[]string{auth.EnvSecretFile + ": read key file", "is required"}},
		{"missing JWKS file", map[string]string{auth.EnvSecret: authtest.Secret, auth.EnvJWKSFile: missing},
			authtest.Secret, nil, []string{auth.EnvJWKSFile + ": read key file"}},
		{"bad JWKS file", map[string]string{auth.EnvSecret: authtest.Secret, auth.EnvJWKSFile: badJWKS},
			authtest.Secret, nil, []string{auth.EnvJWKSFile, "private key"}},
		{"everything wrong at once", map[string]string{auth.EnvSecretFile: missing, auth.EnvJWKSFile: badJWKS, auth.EnvIssuer: ""},
			"", nil, []string{auth.EnvSecretFile, auth.EnvJWKSFile, "is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keys := auth.KeysFromEnv(func(k string) string { return tt.env[k] })
			if string(keys.Secret) != tt.wantSecret {
				t.Errorf("KeysFromEnv().Secret = %q, want %q", keys.Secret, tt.wantSecret)
			}
			var kids []string
			for _, pk := range keys.PublicKeys {
				kids = append(kids, pk.ID)
			}
			if diff := cmp.Diff(tt.wantKids, kids); diff != "" {
				t.Errorf("KeysFromEnv() kids mismatch (-want +got):\n%s", diff)
			}
			err := keys.Validate()
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			for _, want := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %v, want an error containing %q", err, want)
				}
			}
		})
	}
}

func TestKeysValidatePublicKeys(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	base := f.HSOnly
	edPub := f.Ed1.Key.Public()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		keys []auth.PublicKey
		want string
	}{
		{"no kid", []auth.PublicKey{{Alg: auth.AlgEdDSA, Key: edPub}}, "without kid"},
		{"wrong alg", []auth.PublicKey{{ID: "a", Alg: auth.AlgRS256, Key: edPub}}, "is for EdDSA"},
		{"HS256 label", []auth.PublicKey{{ID: "a", Alg: auth.AlgHS256, Key: edPub}}, "is for EdDSA"},
		{"small RSA", []auth.PublicKey{{ID: "a", Alg: auth.AlgRS256, Key: &small.PublicKey}}, "1024 bits"},
		{"duplicate kid", []auth.PublicKey{{ID: "a", Alg: auth.AlgEdDSA, Key: edPub}, {ID: "a", Alg: auth.AlgEdDSA, Key: edPub}}, "twice"},
		{"bytes are no key", []auth.PublicKey{{ID: "a", Alg: auth.AlgEdDSA, Key: []byte("0123456789abcdef0123456789abcdef")}}, "not an Ed25519 or RSA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			k := base
			k.PublicKeys = tt.keys
			if err := k.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSigningKeyPEM(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	rsaKey := f.RSA.Key.(*rsa.PrivateKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	tests := []struct {
		name    string
		pem     []byte
		kid     string
		wantKid string
		wantAlg string
	}{
		{"Ed25519 PKCS#8 with kid", authtest.PrivatePEM(t, f.Ed1.Key), authtest.KidEd1, authtest.KidEd1, auth.AlgEdDSA},
		{"RSA PKCS#8 with kid", authtest.PrivatePEM(t, rsaKey), authtest.KidRSA, authtest.KidRSA, auth.AlgRS256},
		{"RSA PKCS#1, thumbprint kid", pkcs1, "", mustThumbprint(t, rsaKey.Public()), auth.AlgRS256},
		{"Ed25519, thumbprint kid", authtest.PrivatePEM(t, f.Ed2.Key), "", mustThumbprint(t, f.Ed2.Key.Public()), auth.AlgEdDSA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sk, err := auth.ParseSigningKeyPEM(tt.pem, tt.kid)
			if err != nil {
				t.Fatalf("ParseSigningKeyPEM() = %v", err)
			}
			pub, err := sk.Public()
			if err != nil || pub.ID != tt.wantKid || pub.Alg != tt.wantAlg {
				t.Fatalf("Public() = %s %s, %v, want %s %s", pub.ID, pub.Alg, err, tt.wantKid, tt.wantAlg)
			}
			keys := f.HSOnly
			keys.PublicKeys = []auth.PublicKey{pub}
			now := time.Now()
			tok, exp, err := keys.IssueWith(sk, "op", []string{auth.ScopeDataRead}, time.Minute, now)
			if err != nil {
				t.Fatalf("IssueWith() = %v", err)
			}
			if !exp.Equal(now.Add(time.Minute)) {
				t.Errorf("IssueWith() expiry = %v, want %v", exp, now.Add(time.Minute))
			}
			claims, err := auth.NewVerifier(keys).Verify(tok)
			if err != nil || claims.Subject != "op" || claims.Scope != auth.ScopeDataRead {
				t.Errorf("Verify(IssueWith()) = %+v, %v, want sub op with data:read", claims, err)
			}
			if _, err := auth.NewVerifier(f.HSOnly).Verify(tok); !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("HS-only Verify(IssueWith()) = %v, want %v", err, auth.ErrInvalidToken)
			}
		})
	}
}

func mustThumbprint(t *testing.T, pub any) string {
	t.Helper()
	tp, err := auth.Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestSigningKeyPEMRejects(t *testing.T) {
	t.Parallel()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edPub, _ := ed25519.GenerateKey(rand.Reader)
	pubDER, err := x509.MarshalPKIXPublicKey(edPub.Public())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pem  []byte
		want string
	}{
		{"not PEM", []byte("hello"), "no PEM block"},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), `"PUBLIC KEY"`},
		{"EC key", authtest.PrivatePEM(t, ec), "not an Ed25519 or RSA"},
		{"1024-bit RSA", authtest.PrivatePEM(t, small), "1024 bits"},
		{"corrupt DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "parse signing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := auth.ParseSigningKeyPEM(tt.pem, "k"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSigningKeyPEM() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestOpenSSLKey: a key made by `openssl genpkey`, as the README says to
// make one, signs tokens that verify.
func TestOpenSSLKey(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed (.ci/run installs it)")
	}
	path := filepath.Join(t.TempDir(), "ed.pem")
	if out, err := exec.CommandContext(t.Context(), openssl, "genpkey", "-algorithm", "ed25519", "-out", path).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	sk, err := auth.ReadSigningKeyFile(path, "")
	if err != nil {
		t.Fatalf("ReadSigningKeyFile() = %v", err)
	}
	pub, err := sk.Public()
	if err != nil {
		t.Fatal(err)
	}
	keys := authtest.New(t).HSOnly
	keys.PublicKeys = []auth.PublicKey{pub}
	tok, _, err := keys.IssueWith(sk, "op", nil, time.Minute, time.Now())
	if err != nil {
		t.Fatalf("IssueWith() = %v", err)
	}
	if _, err := auth.NewVerifier(keys).Verify(tok); err != nil {
		t.Errorf("Verify() = %v, want nil", err)
	}
}
