package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
)

// TestProblem: each way a token fails gets its own message, which names
// the problem and never echoes the token.
func TestProblem(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	now := time.Now()
	expired, _, _ := keys.Issue("alice", nil, time.Minute, now.Add(-time.Hour))
	other := Keys{Secret: []byte(strings.Repeat("k", 32)), Issuer: keys.Issuer, Audience: keys.Audience}
	wrongKey, _, _ := other.Issue("alice", nil, time.Hour, now)
	wrongIss := other
	wrongIss.Secret, wrongIss.Issuer = keys.Secret, "somebody-else"
	foreign, _, _ := wrongIss.Issue("alice", nil, time.Hour, now)
	tests := []struct{ name, token, want string }{
		{"expired", expired, "token is expired"},
		{"signed with another key", wrongKey, "token signature is invalid"},
		{"another issuer", foreign, "token has the wrong issuer"},
		{"not a token", "a.b.c", "token is malformed"},
	}
	v := NewVerifier(keys)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.token)
			if err == nil {
				t.Fatal("Verify accepted the token")
			}
			got := Problem(err)
			if got != tt.want {
				t.Errorf("Problem() = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, tt.token) {
				t.Errorf("Problem() = %q echoes the token", got)
			}
		})
	}
}

// TestAuthenticate: no token and a bad one are both 401 (apperr
// unauthorized), each with its RFC 6750 challenge; a good one gives its
// claims and no challenge.
func TestAuthenticate(t *testing.T) {
	t.Parallel()
	keys := testKeys()
	v := NewVerifier(keys)
	good, _, _ := keys.Issue("alice", []string{ScopeDataRead}, time.Hour, time.Now())
	tests := []struct{ name, header, challenge string }{
		{"no token", "", `Bearer realm="scalelab"`},
		{"bad token", "Bearer a.b.c", `Bearer realm="scalelab", error="invalid_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims, challenge, err := Authenticate(v, tt.header)
			if claims != nil || apperr.CodeOf(err) != apperr.Unauthorized || challenge != tt.challenge {
				t.Errorf("Authenticate(%q) = %v, %q, %v; want nil, %q, unauthorized", tt.header, claims, challenge, err, tt.challenge)
			}
		})
	}
	claims, challenge, err := Authenticate(v, "Bearer "+good)
	if err != nil || challenge != "" || claims.Subject != "alice" {
		t.Errorf("Authenticate(good) = %v, %q, %v; want alice's claims", claims, challenge, err)
	}
}
