package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
)

// Bounds on RSA keys: below 2048 bits a key is factorable by a determined
// attacker; above 8192 bits every verification gets needlessly slow.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// PublicKey is one verification key from a JWKS: an Ed25519 key for EdDSA
// or an RSA key for RS256, found by its key id.
type PublicKey struct {
	// ID is the JWK's kid, matched against the token header's kid.
	ID string
	// Alg is AlgEdDSA or AlgRS256.
	Alg string
	// Key is an ed25519.PublicKey or an *rsa.PublicKey, as Alg says.
	Key crypto.PublicKey
}

// validate checks that the key fits its algorithm.
func (k PublicKey) validate() error {
	if k.ID == "" {
		return errors.New("key without kid")
	}
	switch key := k.Key.(type) {
	case ed25519.PublicKey:
		if k.Alg != AlgEdDSA {
			return fmt.Errorf("key %q: an Ed25519 key is for %s, not %q", k.ID, AlgEdDSA, k.Alg)
		}
		if len(key) != ed25519.PublicKeySize {
			return fmt.Errorf("key %q: Ed25519 key is %d bytes, want %d", k.ID, len(key), ed25519.PublicKeySize)
		}
	case *rsa.PublicKey:
		if k.Alg != AlgRS256 {
			return fmt.Errorf("key %q: an RSA key is for %s, not %q", k.ID, AlgRS256, k.Alg)
		}
		if key == nil || key.N == nil {
			return fmt.Errorf("key %q: empty RSA key", k.ID)
		}
		if n := key.N.BitLen(); n < minRSABits || n > maxRSABits {
			return fmt.Errorf("key %q: RSA key has %d bits, want %d to %d", k.ID, n, minRSABits, maxRSABits)
		}
		if key.E < 3 || key.E%2 == 0 {
			return fmt.Errorf("key %q: RSA exponent %d is not an odd number >= 3", k.ID, key.E)
		}
	default:
		return fmt.Errorf("key %q: %T is not an Ed25519 or RSA public key", k.ID, k.Key)
	}
	return nil
}

// validatePublicKeys checks each key and that no two share a kid, which
// would make the choice of key ambiguous.
func validatePublicKeys(keys []PublicKey) error {
	var errs []error
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := k.validate(); err != nil {
			errs = append(errs, fmt.Errorf("JWKS: %w", err))
			continue
		}
		if seen[k.ID] {
			errs = append(errs, fmt.Errorf("JWKS: kid %q appears twice", k.ID))
		}
		seen[k.ID] = true
	}
	return errors.Join(errs...)
}

// jwk is the subset of RFC 7517/7518/8037 members that ParseJWKS reads.
type jwk struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg,omitempty"`
	Use    string   `json:"use,omitempty"`
	KeyOps []string `json:"key_ops,omitempty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	// D or K are private material: a verifier must never hold them.
	D string `json:"d,omitempty"`
	K string `json:"k,omitempty"`
}

// ParseJWKS reads a JWK Set ({"keys":[...]}) of public signing keys: OKP
// keys with crv Ed25519 (alg EdDSA) and RSA keys (alg RS256), each with a
// unique kid. A key that is anything else, is for encryption, or holds
// private material is an error rather than skipped, so a misconfigured
// file fails at start and not on the first token.
func ParseJWKS(data []byte) ([]PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("parse JWKS: no keys")
	}
	keys := make([]PublicKey, 0, len(set.Keys))
	var errs []error
	for i, raw := range set.Keys {
		var j jwk
		if err := json.Unmarshal(raw, &j); err != nil {
			errs = append(errs, fmt.Errorf("parse JWKS key %d: %w", i, err))
			continue
		}
		k, err := j.publicKey()
		if err != nil {
			errs = append(errs, fmt.Errorf("parse JWKS key %d (kid %q): %w", i, j.Kid, err))
			continue
		}
		keys = append(keys, k)
	}
	if err := errors.Join(append(errs, validatePublicKeys(keys))...); err != nil {
		return nil, err
	}
	return keys, nil
}

// publicKey converts one JWK.
func (j jwk) publicKey() (PublicKey, error) {
	if j.Kid == "" {
		return PublicKey{}, errors.New("no kid: tokens pick their key by kid")
	}
	if j.D != "" || j.K != "" {
		return PublicKey{}, errors.New("holds private key material; publish only public keys")
	}
	if j.Use != "" && j.Use != "sig" {
		return PublicKey{}, fmt.Errorf("use %q, want sig", j.Use)
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return PublicKey{}, fmt.Errorf("key_ops %q lack verify", j.KeyOps)
	}
	switch j.Kty {
	case "OKP":
		if j.Crv != "Ed25519" {
			return PublicKey{}, fmt.Errorf("OKP curve %q, want Ed25519", j.Crv)
		}
		if j.Alg != "" && j.Alg != AlgEdDSA {
			return PublicKey{}, fmt.Errorf("alg %q for an Ed25519 key, want %s", j.Alg, AlgEdDSA)
		}
		x, err := b64(j.X)
		if err != nil {
			return PublicKey{}, fmt.Errorf("x: %w", err)
		}
		return PublicKey{ID: j.Kid, Alg: AlgEdDSA, Key: ed25519.PublicKey(x)}, nil
	case "RSA":
		if j.Alg != "" && j.Alg != AlgRS256 {
			return PublicKey{}, fmt.Errorf("alg %q for an RSA key, want %s", j.Alg, AlgRS256)
		}
		n, err := b64(j.N)
		if err != nil {
			return PublicKey{}, fmt.Errorf("n: %w", err)
		}
		e, err := b64(j.E)
		if err != nil {
			return PublicKey{}, fmt.Errorf("e: %w", err)
		}
		if len(e) == 0 || len(e) > 4 {
			return PublicKey{}, fmt.Errorf("e is %d bytes, want 1 to 4", len(e))
		}
		return PublicKey{ID: j.Kid, Alg: AlgRS256, Key: &rsa.PublicKey{
			N: new(big.Int).SetBytes(n),
			E: int(new(big.Int).SetBytes(e).Int64()),
		}}, nil
	default:
		return PublicKey{}, fmt.Errorf("kty %q not supported, want OKP (Ed25519) or RSA", j.Kty)
	}
}

// b64 decodes an unpadded, canonical base64url JWK member.
func b64(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

// toJWK is the public JWK of k.
func (k PublicKey) toJWK() (jwk, error) {
	if err := k.validate(); err != nil {
		return jwk{}, err
	}
	enc := base64.RawURLEncoding.EncodeToString
	switch key := k.Key.(type) {
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Kid: k.ID, Alg: AlgEdDSA, Use: "sig", Crv: "Ed25519", X: enc(key)}, nil
	case *rsa.PublicKey:
		return jwk{Kty: "RSA", Kid: k.ID, Alg: AlgRS256, Use: "sig", N: enc(key.N.Bytes()),
			E: enc(big.NewInt(int64(key.E)).Bytes())}, nil
	}
	return jwk{}, fmt.Errorf("key %q: %T is not an Ed25519 or RSA public key", k.ID, k.Key)
}

// MarshalJWKS encodes keys as a JWK Set that ParseJWKS reads back, for
// publishing the public halves of signing keys.
func MarshalJWKS(keys []PublicKey) ([]byte, error) {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: make([]jwk, 0, len(keys))}
	for _, k := range keys {
		j, err := k.toJWK()
		if err != nil {
			return nil, fmt.Errorf("marshal JWKS: %w", err)
		}
		set.Keys = append(set.Keys, j)
	}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal JWKS: %w", err)
	}
	return b, nil
}

// Thumbprint returns the RFC 7638 JWK thumbprint of an Ed25519 or RSA public
// key: a stable kid derived from the key itself.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	enc := base64.RawURLEncoding.EncodeToString
	var members string
	// RFC 7638: the required members only, in lexicographic order, no
	// whitespace. The values are base64url, so no JSON escaping is needed.
	switch key := pub.(type) {
	case ed25519.PublicKey:
		members = fmt.Sprintf(`{"crv":"Ed25519","kty":"OKP","x":"%s"}`, enc(key))
	case *rsa.PublicKey:
		members = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, enc(big.NewInt(int64(key.E)).Bytes()), enc(key.N.Bytes()))
	default:
		return "", fmt.Errorf("thumbprint: %T is not an Ed25519 or RSA public key", pub)
	}
	sum := sha256.Sum256([]byte(members))
	return enc(sum[:]), nil
}

// ReadJWKSFile reads and parses a JWKS file (at most 1 MiB).
func ReadJWKSFile(path string) ([]PublicKey, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// readLimited reads a whole key file of at most maxKeyFileBytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(b) > maxKeyFileBytes {
		return nil, fmt.Errorf("read key file %s: longer than %d bytes", path, maxKeyFileBytes)
	}
	return b, nil
}

// SigningKey is a private key that signs EdDSA or RS256 tokens, and the
// key id under which verifiers find its public half.
type SigningKey struct {
	ID string
	// Key is an ed25519.PrivateKey or an *rsa.PrivateKey.
	Key crypto.Signer
}

// Public returns the verification key for k, as it belongs in a JWKS.
func (k SigningKey) Public() (PublicKey, error) {
	if k.Key == nil {
		return PublicKey{}, errors.New("signing key: no key")
	}
	pk := PublicKey{ID: k.ID, Key: k.Key.Public()}
	switch k.Key.(type) {
	case ed25519.PrivateKey:
		pk.Alg = AlgEdDSA
	case *rsa.PrivateKey:
		pk.Alg = AlgRS256
	default:
		return PublicKey{}, fmt.Errorf("signing key: %T is not an Ed25519 or RSA private key", k.Key)
	}
	if err := pk.validate(); err != nil {
		return PublicKey{}, fmt.Errorf("signing key: %w", err)
	}
	return pk, nil
}

// ParseSigningKeyPEM reads an Ed25519 or RSA private key from PEM (PKCS#8,
// as `openssl genpkey` writes, or PKCS#1 for RSA). An empty kid becomes the
// key's RFC 7638 thumbprint.
func ParseSigningKeyPEM(data []byte, kid string) (SigningKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return SigningKey{}, errors.New("parse signing key: no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return SigningKey{}, fmt.Errorf("parse signing key: PEM block %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return SigningKey{}, fmt.Errorf("parse signing key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return SigningKey{}, fmt.Errorf("parse signing key: %T cannot sign", key)
	}
	if kid == "" {
		if kid, err = Thumbprint(signer.Public()); err != nil {
			return SigningKey{}, fmt.Errorf("parse signing key: %w", err)
		}
	}
	sk := SigningKey{ID: kid, Key: signer}
	if _, err := sk.Public(); err != nil {
		return SigningKey{}, err
	}
	return sk, nil
}

// ReadSigningKeyFile reads a PEM private key file; see ParseSigningKeyPEM.
func ReadSigningKeyFile(path, kid string) (SigningKey, error) {
	b, err := readLimited(path)
	if err != nil {
		return SigningKey{}, err
	}
	k, err := ParseSigningKeyPEM(b, kid)
	if err != nil {
		return SigningKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
