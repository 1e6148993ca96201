package auth

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scalelab/scalelab/internal/apperr"
)

// Problem says why a token was refused, in words a client can act on,
// without echoing the token: the message of a 401 for err, an error of
// Verifier.Verify. Every role that checks tokens answers with it.
func Problem(err error) string {
	switch {
	case errors.Is(err, ErrUnknownKey):
		return "token's key id (kid) names no key configured for its algorithm"
	case errors.Is(err, ErrBadHeader):
		return "token header is not accepted (typ or crit)"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token is expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token has the wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token has the wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim (exp)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "token signature is invalid"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "token algorithm is not allowed"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	default:
		return "token is invalid"
	}
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
