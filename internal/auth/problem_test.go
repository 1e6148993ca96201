package auth

import (
	"strings"
	"testing"
	"time"
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
