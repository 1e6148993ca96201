package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/testutil"
)

// cheapBcrypt is the --bcrypt-cost of the tests' `users add`: under the
// race detector a hash at dbsvc.DefaultBcryptCost takes seconds.
var cheapBcrypt = strconv.Itoa(dbsvc.MinBcryptCost)

// TestUsersAdd drives `scalelab users add` against NATS and dbsvc: the
// user is created, then updated, with only a bcrypt hash stored; bad input
// is a usage error and stores nothing.
func TestUsersAdd(t *testing.T) {
	ns := testutil.StartNATS(t)
	vars := env(map[string]string{"SCALELAB_NATS_URL": ns.ClientURL(), "SCALELAB_BCRYPT_COST": cheapBcrypt})
	db := dbsvc.NewClient(testutil.Connect(t, ns))

	// No dbsvc yet: a plain error (exit 1), not a usage error.
	err := runStdin(t.Context(), "correct horse battery\n", []string{"users", "add", "alice"}, vars, io.Discard, io.Discard)
	var aerr *apperr.Error
	if err == nil || errors.Is(err, ErrUsage) || !errors.As(err, &aerr) || aerr.Code != apperr.Unavailable {
		t.Fatalf("users add without dbsvc = %v, want an unavailable error that is not a usage error", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := dbsvc.DefaultConfig()
	cfg.Listener, cfg.DataDir, cfg.SeedRows = ln, t.TempDir(), 100
	dbNC := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return dbsvc.Run(ctx, cfg, dbNC, testutil.QuietLog()) })
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, err := db.GetUser(t.Context(), "", "nobody"); !errors.Is(err, dbsvc.ErrNotFound) {
			return err
		}
		return nil
	})

	added := []struct {
		name     string
		args     []string
		stdin    string
		user     string
		password string
		out      string
	}{
		{"new user, default scopes", []string{"users", "add", "alice"}, "correct horse battery\n", "alice", "correct horse battery",
			"user alice created with scopes data:read items:read tasks:read tasks:write\n"},
		{"same user, flag after the name, no newline", []string{"users", "add", "alice", "--scope", "items:read items:write"},
			"another long password", "alice", "another long password",
			"user alice updated with scopes items:read items:write\n"},
		{"flag before the name, CRLF", []string{"users", "add", "--scope=data:read", "bob.smith-2"}, "  spaces count too  \r\n",
			"bob.smith-2", "  spaces count too  ", "user bob.smith-2 created with scopes data:read\n"},
	}
	for _, tt := range added {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			if err := runStdin(t.Context(), tt.stdin, tt.args, vars, &out, io.Discard); err != nil {
				t.Fatalf("run(%q) = %v", tt.args, err)
			}
			if out.String() != tt.out {
				t.Errorf("run(%q) printed %q, want %q", tt.args, out.String(), tt.out)
			}
			u, err := db.GetUser(t.Context(), "", tt.user)
			if err != nil {
				t.Fatalf("GetUser(%s) = %v", tt.user, err)
			}
			if err := bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(tt.password)); err != nil {
				t.Errorf("stored hash does not match %q: %v", tt.password, err)
			}
			if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil || cost != dbsvc.MinBcryptCost {
				t.Errorf("bcrypt.Cost(stored hash) = %d, %v, want --bcrypt-cost (%d)", cost, err, dbsvc.MinBcryptCost)
			}
			wantScopes := strings.Fields(strings.TrimSuffix(tt.out[strings.Index(tt.out, "scopes ")+len("scopes "):], "\n"))
			if diff := cmp.Diff(wantScopes, u.Scopes); diff != "" {
				t.Errorf("stored scopes mismatch (-want +got):\n%s", diff)
			}
		})
	}

	usage := []struct {
		name, stdin string
		args        []string
	}{
		{"no subcommand", "correct horse battery\n", []string{"users"}},
		{"unknown subcommand", "correct horse battery\n", []string{"users", "rm", "carol"}},
		{"no name", "correct horse battery\n", []string{"users", "add"}},
		{"bad name", "correct horse battery\n", []string{"users", "add", "carol smith"}},
		{"wildcard name", "correct horse battery\n", []string{"users", "add", "carol.>"}},
		{"two names", "correct horse battery\n", []string{"users", "add", "carol", "dave"}},
		{"unknown flag", "correct horse battery\n", []string{"users", "add", "carol", "--admin"}},
		{"unknown scope", "correct horse battery\n", []string{"users", "add", "carol", "--scope", "data:read root"}},
		{"duplicate scope", "correct horse battery\n", []string{"users", "add", "carol", "--scope", "data:read data:read"}},
		{"no scopes", "correct horse battery\n", []string{"users", "add", "carol", "--scope", ""}},
		{"empty stdin", "", []string{"users", "add", "carol"}},
		{"empty line", "\n", []string{"users", "add", "carol"}},
		{"password of 11 characters", "abcdefghijk\n", []string{"users", "add", "carol"}},
		{"password over 72 bytes", strings.Repeat("x", 73) + "\n", []string{"users", "add", "carol"}},
		{"password without end", strings.Repeat("x", 5000), []string{"users", "add", "carol"}},
		{"bcrypt cost too low", "correct horse battery\n", []string{"users", "add", "carol", "--bcrypt-cost", strconv.Itoa(dbsvc.MinBcryptCost - 1)}},
		{"bcrypt cost too high", "correct horse battery\n", []string{"users", "add", "carol", "--bcrypt-cost", strconv.Itoa(dbsvc.MaxBcryptCost + 1)}},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			err := runStdin(t.Context(), tt.stdin, tt.args, vars, io.Discard, io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("run(%q) with stdin %.20q = %v, want a usage error (exit 2)", tt.args, tt.stdin, err)
			}
		})
	}
	if _, err := db.GetUser(t.Context(), "", "carol"); !errors.Is(err, dbsvc.ErrNotFound) {
		t.Errorf("GetUser(carol) after only bad adds = %v, want ErrNotFound", err)
	}
	// 12 characters, counted as characters: 12 two-byte runes pass.
	if err := runStdin(t.Context(), strings.Repeat("é", 12)+"\n", []string{"users", "add", "carol"}, vars, io.Discard, io.Discard); err != nil {
		t.Errorf("users add with a 12-character password = %v, want nil", err)
	}
	// Without --bcrypt-cost, the cost the gateway's dummy hash matches.
	var help strings.Builder
	if err := run(t.Context(), []string{"users", "add", "-h"}, env(nil), io.Discard, &help); err != nil {
		t.Errorf("users add -h = %v, want nil", err)
	}
	if want := fmt.Sprintf("(default %d)", dbsvc.DefaultBcryptCost); !strings.Contains(help.String(), want) {
		t.Errorf("users add -h does not say %q:\n%s", want, help.String())
	}
}
