package dbsvc

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/wire"
)

// testHash returns a bcrypt hash of password at MinBcryptCost, the cheapest
// cost the service accepts.
func testHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), MinBcryptCost)
	if err != nil {
		t.Fatalf("GenerateFromPassword() = %v", err)
	}
	return string(h)
}

func TestUsersPutGet(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()

	first := UserPut{Name: "alice", PasswordHash: testHash(t, "first password"), Scopes: []string{auth.ScopeItemsRead, auth.ScopeDataRead}}
	created, err := db.client.PutUser(ctx, "", first)
	if err != nil || !created {
		t.Fatalf("PutUser(new alice) = %v, %v, want true, nil", created, err)
	}
	got, err := db.client.GetUser(ctx, "", "alice")
	if err != nil {
		t.Fatalf("GetUser(alice) = %v", err)
	}
	if diff := cmp.Diff(first, UserPut{Name: got.Name, PasswordHash: got.PasswordHash, Scopes: got.Scopes}); diff != "" {
		t.Errorf("GetUser(alice) mismatch (-want +got):\n%s", diff)
	}
	if got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Errorf("new user: created_at %v, updated_at %v, want both set and equal", got.CreatedAt, got.UpdatedAt)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(got.PasswordHash), []byte("first password")); err != nil {
		t.Errorf("stored hash does not match the password: %v", err)
	}

	// A second put of the same name replaces hash and scopes, keeps
	// created_at and says created:false.
	second := UserPut{Name: "alice", PasswordHash: testHash(t, "second password"), Scopes: []string{auth.ScopeTasksWrite}}
	created, err = db.client.PutUser(ctx, "", second)
	if err != nil || created {
		t.Fatalf("PutUser(existing alice) = %v, %v, want false, nil", created, err)
	}
	again, err := db.client.GetUser(ctx, "", "alice")
	if err != nil {
		t.Fatalf("GetUser(alice) after update = %v", err)
	}
	if again.PasswordHash != second.PasswordHash || !cmp.Equal(again.Scopes, second.Scopes) {
		t.Errorf("GetUser(alice) after update = %+v, want the second hash and scopes %q", again, second.Scopes)
	}
	if !again.CreatedAt.Equal(got.CreatedAt) || again.UpdatedAt.Before(got.UpdatedAt) {
		t.Errorf("after update: created_at %v (was %v), updated_at %v (was %v), want created_at kept and updated_at not earlier",
			again.CreatedAt, got.CreatedAt, again.UpdatedAt, got.UpdatedAt)
	}

	// Unknown users are not_found and match ErrNotFound.
	_, err = db.client.GetUser(ctx, "", "bob")
	if !errors.Is(err, ErrNotFound) || codeOf(err) != apperr.NotFound {
		t.Errorf("GetUser(bob) = %v, want not_found matching ErrNotFound", err)
	}

	// The queries are counted under their own labels.
	body, err := getBody(ctx, &http.Client{Timeout: 10 * time.Second}, db.url+"/metrics")
	if err != nil {
		t.Fatalf("GET /metrics = %v", err)
	}
	for _, want := range []string{
		`scalelab_db_queries_total{query="user_put"} 2`,
		`scalelab_db_queries_total{query="user_get"} 3`,
		`scalelab_db_query_seconds_count{query="user_get"} 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("GET /metrics does not contain %q", want)
		}
	}
}

func TestUsersValidation(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	good := testHash(t, "a good password")
	weak, err := bcrypt.GenerateFromPassword([]byte("a good password"), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("GenerateFromPassword() = %v", err)
	}
	all := []string{auth.ScopeDataRead}

	bad := []struct {
		name string
		put  UserPut
	}{
		{"empty name", UserPut{"", good, all}},
		{"name too long", UserPut{strings.Repeat("a", MaxUserNameLen+1), good, all}},
		{"name with space", UserPut{"al ice", good, all}},
		{"name with NATS wildcard", UserPut{"al*", good, all}},
		{"name with slash", UserPut{"../etc", good, all}},
		{"name not ASCII", UserPut{"alicé", good, all}},
		{"plain password as hash", UserPut{"alice", "correct horse battery staple", all}},
		{"empty hash", UserPut{"alice", "", all}},
		{"hash cost below minimum", UserPut{"alice", string(weak), all}},
		{"hash cost above maximum", UserPut{"alice", "$2a$17$" + good[7:], all}},
		{"hash truncated", UserPut{"alice", good[:59], all}},
		{"hash with bad character", UserPut{"alice", good[:59] + "!", all}},
		{"hash of another scheme", UserPut{"alice", "$1$" + good[3:], all}},
		{"no scopes", UserPut{"alice", good, nil}},
		{"empty scopes", UserPut{"alice", good, []string{}}},
		{"unknown scope", UserPut{"alice", good, []string{"root"}}},
		{"wildcard scope", UserPut{"alice", good, []string{"*"}}},
		{"duplicate scope", UserPut{"alice", good, []string{auth.ScopeDataRead, auth.ScopeItemsRead, auth.ScopeDataRead}}},
		{"scope list as one string", UserPut{"alice", good, []string{"data:read items:read"}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.put.Validate(); err == nil {
				t.Errorf("Validate() = nil, want an error")
			}
			_, err := db.client.PutUser(t.Context(), "", tt.put)
			if codeOf(err) != apperr.Invalid {
				t.Errorf("PutUser() = %v, want code %s", err, apperr.Invalid)
			}
		})
	}
	// The limits themselves are accepted: a 64-character name, the
	// minimum cost, every scope.
	edge := UserPut{Name: strings.Repeat("a", MaxUserNameLen-4) + "._-9", PasswordHash: good, Scopes: auth.AllScopes}
	if created, err := db.client.PutUser(t.Context(), "", edge); err != nil || !created {
		t.Errorf("PutUser(%q) = %v, %v, want true, nil", edge.Name, created, err)
	}

	// Raw bodies: a password field is refused (unknown field), so a
	// plaintext password cannot be stored by mistake.
	rawBad := []struct {
		name, subject, body string
	}{
		{"put with password field", wire.DBUserPut, `{"name":"alice","password":"a good password","scopes":["data:read"]}`},
		{"put with extra field", wire.DBUserPut, `{"name":"alice","password_hash":"` + good + `","scopes":["data:read"],"admin":true}`},
		{"put not JSON", wire.DBUserPut, `alice`},
		{"put empty", wire.DBUserPut, ``},
		{"put scopes as string", wire.DBUserPut, `{"name":"alice","password_hash":"` + good + `","scopes":"data:read"}`},
		{"get empty", wire.DBUserGet, ``},
		{"get no name", wire.DBUserGet, `{}`},
		{"get bad name", wire.DBUserGet, `{"name":"a>b"}`},
		{"get trailing data", wire.DBUserGet, `{"name":"alice"} {}`},
	}
	for _, tt := range rawBad {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(t.Context(), tt.subject, []byte(tt.body))
			if err != nil {
				t.Fatalf("Request(%s) = %v", tt.subject, err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(apperr.Invalid) {
				t.Errorf("Request(%s, %.60q) error code = %q (%q), want %q", tt.subject, tt.body, got,
					msg.Header.Get(micro.ErrorHeader), apperr.Invalid)
			}
		})
	}
	if _, err := db.client.GetUser(t.Context(), "", "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetUser(alice) after only bad puts = %v, want ErrNotFound", err)
	}
}

// TestStoreAddsUsersTable: a database made before the users table existed
// gets it on the next start, keeping its data and schema version.
func TestStoreAddsUsersTable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := openTestStore(t, dir)
	if _, err := old.db.ExecContext(t.Context(), `DROP TABLE users`); err != nil {
		t.Fatalf("drop users: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}

	st := openTestStore(t, dir)
	if st.seeded {
		t.Errorf("reopen seeded again, want the old data kept")
	}
	put := UserPut{Name: "alice", PasswordHash: testHash(t, "a good password"), Scopes: []string{auth.ScopeDataRead}}
	if created, err := st.PutUser(t.Context(), put); err != nil || !created {
		t.Fatalf("PutUser() on the upgraded database = %v, %v, want true, nil", created, err)
	}
	if _, err := st.User(t.Context(), "alice"); err != nil {
		t.Errorf("User(alice) = %v", err)
	}
}
