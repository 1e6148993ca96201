package auth

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scalelab/scalelab/internal/apperr"
)

// problems are the reasons a token is refused, in words a client can act
// on, first match first: the errors of Verifier.Verify and of jwt's
// parser that it wraps.
var problems = []struct {
	err     error
	message string
}{
	{ErrUnknownKey, "token's key id (kid) names no key configured for its algorithm"},
	{ErrBadHeader, "token header is not accepted (typ or crit)"},
	{jwt.ErrTokenExpired, "token is expired"},
	{jwt.ErrTokenNotValidYet, "token is not valid yet"},
	{jwt.ErrTokenUsedBeforeIssued, "token is not valid yet"},
	{jwt.ErrTokenInvalidIssuer, "token has the wrong issuer"},
	{jwt.ErrTokenInvalidAudience, "token has the wrong audience"},
	{jwt.ErrTokenRequiredClaimMissing, "token lacks a required claim (exp)"},
	{jwt.ErrTokenSignatureInvalid, "token signature is invalid"},
	{jwt.ErrTokenUnverifiable, "token algorithm is not allowed"},
	{jwt.ErrTokenMalformed, "token is malformed"},
}

// Problem says why a token was refused, in words a client can act on,
// without echoing the token: the message of a 401 for err, an error of
// Verifier.Verify. Every role that checks tokens answers with it.
func Problem(err error) string {
	for _, p := range problems {
		if errors.Is(err, p.err) {
			return p.message
		}
	}
	return "token is invalid"
}

// Authenticate verifies the token in header, the value of a request's
// Authorization header (a bearer token, or the lab's bare token), with v.
// It returns the token's claims or, for a missing token or one that does
// not verify, an *apperr.Error with code unauthorized and the
// WWW-Authenticate challenge (RFC 6750) its 401 carries. Every role that
// takes tokens over HTTP answers through it, so they refuse alike.
func Authenticate(v *Verifier, header string) (claims *Claims, challenge string, err error) {
	raw, ok := FromHeader(header)
	if !ok {
		return nil, `Bearer realm="scalelab"`, apperr.New(apperr.Unauthorized, "missing token: send Authorization: Bearer <token>")
	}
	claims, err = v.Verify(raw)
	if err != nil {
		return nil, `Bearer realm="scalelab", error="invalid_token"`, apperr.Wrap(err, apperr.Unauthorized, "%s", Problem(err))
	}
	return claims, "", nil
}
