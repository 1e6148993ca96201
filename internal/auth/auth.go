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

// Leeway is how far exp, nbf and iat may be off and still pass: it absorbs
// clock skew between the issuer and the gateways.
const Leeway = leeway

// The environment variables KeysFromEnv reads.
const (
	EnvSecret     = "SCALELAB_JWT_SECRET"
	EnvSecretFile = "SCALELAB_JWT_SECRET_FILE"
	EnvJWKSFile   = "SCALELAB_JWT_JWKS_FILE"
	EnvIssuer     = "SCALELAB_JWT_ISSUER"
	EnvAudience   = "SCALELAB_JWT_AUDIENCE"
)

// The algorithms a Verifier may allow. Everything else, including none,
// HS384/HS512, PS256 and ES256, is refused.
const (
	AlgHS256 = "HS256"
	AlgEdDSA = "EdDSA"
	AlgRS256 = "RS256"
)

// Scopes a token may carry; routes require one of them.
const (
	ScopeDataRead   = "data:read"
	ScopeItemsRead  = "items:read"
	ScopeItemsWrite = "items:write"
	ScopeTasksRead  = "tasks:read"
	ScopeTasksWrite = "tasks:write"
	// ScopeTasksAdmin reads, waits for and cancels every user's tasks, not
	// only the token subject's own.
	ScopeTasksAdmin = "tasks:admin"
	// ScopeCacheRead reads cached values over cachesvc's HTTP API.
	ScopeCacheRead = "cache:read"
	// ScopeCacheWrite writes, deletes and flushes cached values over
	// cachesvc's HTTP API.
	ScopeCacheWrite = "cache:write"
	// ScopeAdmin is required by every state-changing operations route (the
	// balancer's drain and undrain on its admin listener).
	ScopeAdmin = "admin"
)

// AllScopes is every scope, as granted to the dev token that `up` prints.
var AllScopes = []string{
	ScopeDataRead, ScopeItemsRead, ScopeItemsWrite, ScopeTasksRead, ScopeTasksWrite,
	ScopeTasksAdmin, ScopeCacheRead, ScopeCacheWrite, ScopeAdmin,
}

// ErrInvalidToken is returned (wrapped) for every token that does not verify.
var ErrInvalidToken = errors.New("auth: invalid token")

// ErrUnknownKey is wrapped, along with ErrInvalidToken, when a token's
// header names no usable key: an EdDSA or RS256 token without a kid, with a
// kid that is not in the JWKS, or with a kid whose key is for another
// algorithm.
var ErrUnknownKey = errors.New("auth: no key for the token's kid and alg")

// ErrBadHeader is wrapped, along with ErrInvalidToken, when a token's header
// has a typ other than JWT or at+jwt, or a crit member (RFC 7515 says an
// extension we do not understand must fail the token).
var ErrBadHeader = errors.New("auth: token header not accepted")

// Claims are the claims of a scalelab token.
type Claims struct {
	Scope string `json:"scope,omitempty"`
	jwt.RegisteredClaims
}

// HasScope reports whether the token grants scope.
func (c *Claims) HasScope(scope string) bool {
	// strings.FieldsSeq, not Fields: this runs on every request, and
	// Fields allocates the slice of all the token's scopes each time.
	for s := range strings.FieldsSeq(c.Scope) {
		if s == scope {
			return true
		}
	}
	return false
}

// Keys is the key material and the expected iss and aud.
type Keys struct {
	// Secret is the HS256 key, at least MinSecretBytes long.
	Secret   []byte
	Issuer   string
	Audience string
	// PublicKeys, if any, also allow EdDSA and RS256 tokens, each verified
	// with the key whose ID is the token's kid. Usually from a JWKS file.
	PublicKeys []PublicKey

	// loadErr is a problem reading the secret or JWKS file. KeysFromEnv
	// cannot return it without breaking its callers, so Validate reports it
	// with the role's other config problems.
	loadErr error
}

// Validate reports a missing or short secret, an empty issuer or audience,
// a secret or JWKS file that could not be read, and unusable public keys,
// all at once.
func (k Keys) Validate() error {
	var errs []error
	if k.loadErr != nil {
		errs = append(errs, k.loadErr)
	}
	switch {
	case len(k.Secret) == 0:
		errs = append(errs, fmt.Errorf("%s is required (or set %s)", EnvSecret, EnvSecretFile))
	case len(k.Secret) < MinSecretBytes:
		errs = append(errs, fmt.Errorf("%s must be at least %d bytes, got %d", EnvSecret, MinSecretBytes, len(k.Secret)))
	}
	if k.Issuer == "" || k.Audience == "" {
		errs = append(errs, errors.New("JWT issuer and audience must not be empty"))
	}
	if err := validatePublicKeys(k.PublicKeys); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Algorithms returns the algorithms a Verifier for k allows: HS256, plus
// the algorithm of each public key.
func (k Keys) Algorithms() []string {
	algs := []string{AlgHS256}
	for _, pk := range k.PublicKeys {
		if !slices.Contains(algs, pk.Alg) {
			algs = append(algs, pk.Alg)
		}
	}
	return algs
}

// Issue signs an HS256 token for sub with the given scopes, valid for ttl
// from now. It returns the token and its expiry.
func (k Keys) Issue(sub string, scopes []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	return k.issue(jwt.SigningMethodHS256, k.Secret, "", sub, scopes, ttl, now)
}

// IssueWith signs a token like Issue, but with an Ed25519 or RSA private
// key (EdDSA or RS256) and its key id in the kid header, for verifiers that
// hold the public half in their JWKS.
func (k Keys) IssueWith(key SigningKey, sub string, scopes []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
	pub, err := key.Public()
	if err != nil {
		return "", time.Time{}, err
	}
	return k.issue(jwt.GetSigningMethod(pub.Alg), key.Key, key.ID, sub, scopes, ttl, now)
}

func (k Keys) issue(method jwt.SigningMethod, key any, kid, sub string, scopes []string, ttl time.Duration, now time.Time) (string, time.Time, error) {
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
	t := jwt.NewWithClaims(method, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign %s token for %s: %w", method.Alg(), sub, err)
	}
	return s, exp, nil
}

// Verifier checks tokens against one set of keys. It is safe for
// concurrent use. It remembers the tokens that verified (see
// verifiedCache), so a token sent again costs a map lookup.
type Verifier struct {
	secret   []byte               // nil if too short: HS256 is then refused
	public   map[string]PublicKey // by kid
	parser   *jwt.Parser
	verified *verifiedCache
	now      func() time.Time // the clock of the parser and the cache
}

// NewVerifier returns a Verifier for keys, which should have passed
// Validate. The allowed algorithms are keys.Algorithms().
func NewVerifier(keys Keys) *Verifier {
	v := &Verifier{
		public:   make(map[string]PublicKey, len(keys.PublicKeys)),
		verified: newVerifiedCache(verifiedTokens),
		now:      time.Now,
	}
	// Defence in depth: an HMAC with an empty or short key must never
	// verify, even if a caller skipped Validate.
	if len(keys.Secret) >= MinSecretBytes {
		v.secret = keys.Secret
	}
	for _, pk := range keys.PublicKeys {
		v.public[pk.ID] = pk
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(keys.Algorithms()),
		jwt.WithIssuer(keys.Issuer),
		jwt.WithAudience(keys.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		// Canonical base64 only, so one token has one spelling.
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	)
	return v
}

// maxTokenBytes bounds the work done on a hostile Authorization header.
const maxTokenBytes = 8 << 10

// MaxTokenBytes is the longest token Verify parses; longer ones are refused
// before any decoding.
const MaxTokenBytes = maxTokenBytes

// Verify parses and verifies a token. Every failure wraps ErrInvalidToken;
// failures of the key lookup also wrap ErrUnknownKey or ErrBadHeader, and
// the others wrap golang-jwt's errors (jwt.ErrTokenExpired, …).
//
// The claims of a token that verified before may be shared with other
// callers: read them, never modify them.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if len(token) > maxTokenBytes {
		return nil, fmt.Errorf("%w: token is longer than %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	if claims, ok := v.verified.get(token, v.now()); ok {
		return claims, nil
	}
	claims, err := v.verify(token)
	if err != nil {
		return nil, err
	}
	v.verified.add(token, claims)
	return claims, nil
}

// verify is Verify without the cache.
func (v *Verifier) verify(token string) (*Claims, error) {
	var claims Claims
	var keyErr error
	_, err := v.parser.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		key, err := v.key(t)
		keyErr = err
		return key, err
	})
	if keyErr != nil {
		// Not jwt's "unverifiable" wrapper: callers word a kid problem
		// differently from an algorithm that is not allowed.
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, keyErr)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.Subject == "" {
		return nil, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	return &claims, nil
}

// key picks the verification key for t, whose alg the parser has already
// checked against the allow-list. HS256 only ever gets the secret and the
// other algorithms only ever get the public key their kid names, so no key
// is used for an algorithm it was not made for.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if err := checkHeader(t.Header); err != nil {
		return nil, err
	}
	alg := t.Method.Alg()
	if alg == AlgHS256 {
		if v.secret == nil {
			return nil, fmt.Errorf("%w: no HS256 secret configured", ErrUnknownKey)
		}
		return v.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, fmt.Errorf("%w: %s token has no kid", ErrUnknownKey, alg)
	}
	pk, ok := v.public[kid]
	if !ok {
		return nil, fmt.Errorf("%w: kid %.64q is not in the JWKS", ErrUnknownKey, kid)
	}
	if pk.Alg != alg {
		return nil, fmt.Errorf("%w: kid %.64q is for %s, token says %s", ErrUnknownKey, kid, pk.Alg, alg)
	}
	return pk.Key, nil
}

// checkHeader refuses a typ that says the JWT is meant for something else
// (an ID token, a logout event …) and any crit extension. Other members
// such as jku, x5u or an embedded jwk are ignored: keys come only from
// local configuration.
func checkHeader(h map[string]any) error {
	if typ, ok := h["typ"]; ok {
		s, _ := typ.(string)
		s = strings.TrimPrefix(strings.ToLower(s), "application/")
		if s != "jwt" && s != "at+jwt" {
			return fmt.Errorf("%w: typ %.32q, want JWT or at+jwt", ErrBadHeader, s)
		}
	}
	if _, ok := h["crit"]; ok {
		return fmt.Errorf("%w: crit extensions are not supported", ErrBadHeader)
	}
	return nil
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

// KeysFromEnv reads the HS256 secret from SCALELAB_JWT_SECRET or the file
// SCALELAB_JWT_SECRET_FILE names, public keys from the JWKS file
// SCALELAB_JWT_JWKS_FILE names, and SCALELAB_JWT_ISSUER and
// SCALELAB_JWT_AUDIENCE, defaulting iss and aud. Secrets come only from the
// environment or files, never from flags, which show in process listings.
// A file that cannot be read, or both secret variables set, is reported by
// the result's Validate.
func KeysFromEnv(getenv func(string) string) Keys {
	k := Keys{Secret: []byte(getenv(EnvSecret)), Issuer: DefaultIssuer, Audience: DefaultAudience}
	if v := getenv(EnvIssuer); v != "" {
		k.Issuer = v
	}
	if v := getenv(EnvAudience); v != "" {
		k.Audience = v
	}
	var errs []error
	if path := getenv(EnvSecretFile); path != "" {
		if len(k.Secret) > 0 {
			errs = append(errs, fmt.Errorf("set %s or %s, not both", EnvSecret, EnvSecretFile))
		} else if secret, err := readSecretFile(path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvSecretFile, err))
		} else {
			k.Secret = secret
		}
	}
	if path := getenv(EnvJWKSFile); path != "" {
		pks, err := ReadJWKSFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvJWKSFile, err))
		}
		k.PublicKeys = pks
	}
	k.loadErr = errors.Join(errs...)
	return k
}

// maxKeyFileBytes bounds what is read from a key file, so that a path such
// as /dev/zero fails instead of filling memory.
const maxKeyFileBytes = 1 << 20

// readSecretFile returns the file's content without trailing line breaks,
// so that `echo "$secret" > file` works; any other byte is part of the key.
func readSecretFile(path string) ([]byte, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}
