// Package auth issues and verifies the platform's JSON Web Tokens.
//
// Tokens carry sub, iat, exp (required), iss, aud and an OAuth-style
// space-separated scope claim. The verifier allows an explicit list of
// algorithms: HS256 with the shared secret, always; EdDSA (Ed25519) and
// RS256 only for keys listed in a local JWKS file, picked by the token's kid.
// Each algorithm is tied to its own key material, so alg:none and algorithm
// confusion (an HS256 token keyed with an RSA public key's bytes) are
// rejected. Keys are read once at start; rotate by adding the new key to the
// JWKS file, restarting the gateways, then signing with the new kid.
//
// A Verifier remembers the tokens that passed (verified.go), which is sound
// only because its keys, issuer and audience never change after it is made.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package auth
