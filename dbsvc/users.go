package dbsvc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/wire"
)

// Query names of the user endpoints, the values of the query label of the
// metrics.
const (
	queryUserPut = "user_put"
	queryUserGet = "user_get"
)

// MaxUserNameLen is the longest user name, in bytes.
const MaxUserNameLen = 64

// MinBcryptCost is the lowest bcrypt cost a stored hash may have: below it
// a stolen database is cheap to brute-force.
const MinBcryptCost = 10

// MaxBcryptCost is the highest bcrypt cost a stored hash may have. Each
// step doubles the work; at 16 one login takes seconds of CPU, and above it
// a single user could tie up a gateway's bcrypt slots for minutes.
const MaxBcryptCost = 16

// DefaultBcryptCost is the cost `scalelab users add` hashes with. The
// gateway compares an unknown user's password against a dummy hash of the
// same cost, so that a login for a user who does not exist takes as long
// as one for a user who does.
const DefaultBcryptCost = 12

// usersTableSQL creates the users table. IF NOT EXISTS, like the rest of
// the schema, which migrate applies on every start: a database created
// before users existed gets the table without a schema version bump.
// scopes is the space-separated list of the token's scope claim.
const usersTableSQL = `CREATE TABLE IF NOT EXISTS users (
		name          TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		scopes        TEXT NOT NULL,
		created_at    TEXT NOT NULL,
		updated_at    TEXT NOT NULL
	)`

// User is one row of the users table: the reply of wire.DBUserGet.
type User struct {
	Name string `json:"name"`
	// PasswordHash is the bcrypt hash of the password.
	PasswordHash string `json:"password_hash"`
	// Scopes are the scopes a token issued to the user carries.
	Scopes    []string  `json:"scopes"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// UserPut is the body of a wire.DBUserPut request: the whole new state of
// a user.
type UserPut struct {
	Name         string   `json:"name"`
	PasswordHash string   `json:"password_hash"`
	Scopes       []string `json:"scopes"`
}

// UserPutReply is the reply to a wire.DBUserPut request.
type UserPutReply struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// Created is true when the user is new, false when an existing user
	// was replaced.
	Created bool `json:"created"`
}

// Validate reports the first problem with u, or nil: see ValidateUserName,
// ValidateScopes and ValidatePasswordHash.
func (u UserPut) Validate() error {
	if err := ValidateUserName(u.Name); err != nil {
		return err
	}
	if err := ValidatePasswordHash(u.PasswordHash); err != nil {
		return err
	}
	return ValidateScopes(u.Scopes)
}

// ValidateUserName accepts 1 to MaxUserNameLen letters, digits, '.', '_'
// and '-': nothing that needs quoting in a log line, a token's sub or a
// shell.
func ValidateUserName(name string) error {
	if name == "" || len(name) > MaxUserNameLen {
		return fmt.Errorf("name must be 1-%d characters", MaxUserNameLen)
	}
	for i := range len(name) {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return errors.New("name may hold only letters, digits, '.', '_' and '-'")
		}
	}
	return nil
}

// ValidateScopes accepts a non-empty list of distinct scopes from
// auth.AllScopes. Empty is refused: a user whose tokens can do nothing is
// a mistake, not a way to disable an account.
func ValidateScopes(scopes []string) error {
	if len(scopes) == 0 {
		return fmt.Errorf("scopes must name at least one of %s", strings.Join(auth.AllScopes, ", "))
	}
	for i, s := range scopes {
		if !slices.Contains(auth.AllScopes, s) {
			return fmt.Errorf("unknown scope %.64q: want one of %s", s, strings.Join(auth.AllScopes, ", "))
		}
		if slices.Contains(scopes[:i], s) {
			return fmt.Errorf("scope %q is listed twice", s)
		}
	}
	return nil
}

// bcryptHashLen is the length of every bcrypt hash: "$2a$", two cost
// digits, '$', 22 characters of salt and 31 of hash.
const bcryptHashLen = 60

// ValidatePasswordHash accepts a bcrypt hash ($2a$, $2b$ or $2y$) with a
// cost from MinBcryptCost to MaxBcryptCost. bcrypt.Cost alone only parses
// the prefix, so the length and alphabet are checked too: a truncated or
// mangled hash would otherwise be stored and fail every login.
func ValidatePasswordHash(hash string) error {
	if len(hash) != bcryptHashLen || !(strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$")) {
		return errors.New("password_hash must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")
	}
	for i := 7; i < len(hash); i++ {
		c := hash[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '/') {
			return errors.New("password_hash must be a bcrypt hash: bad character in its salt or hash")
		}
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return fmt.Errorf("password_hash must be a bcrypt hash: %w", err)
	}
	if cost < MinBcryptCost || cost > MaxBcryptCost {
		return fmt.Errorf("password_hash has bcrypt cost %d, want %d-%d", cost, MinBcryptCost, MaxBcryptCost)
	}
	return nil
}

// userGetRequest is the body of a wire.DBUserGet request.
type userGetRequest struct {
	Name string `json:"name"`
}

// putUser creates or replaces a user (wire.DBUserPut).
func putUser(ctx context.Context, st *store, in UserPut) (UserPutReply, error) {
	if err := in.Validate(); err != nil {
		return UserPutReply{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	created, err := st.PutUser(ctx, in)
	if err != nil {
		return UserPutReply{}, err
	}
	return UserPutReply{Name: in.Name, Scopes: in.Scopes, Created: created}, nil
}

// getUser reads a user (wire.DBUserGet).
func getUser(ctx context.Context, st *store, in userGetRequest) (User, error) {
	if err := ValidateUserName(in.Name); err != nil {
		return User{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	u, err := st.User(ctx, in.Name)
	if errors.Is(err, ErrNotFound) {
		return User{}, apperr.Wrap(err, apperr.NotFound, "user %s not found", in.Name)
	}
	return u, err
}

// PutUser creates the user u.Name, or replaces its hash and scopes, and
// reports whether it created it. The caller validates u.
func (s *store) PutUser(ctx context.Context, u UserPut) (created bool, err error) {
	ctx, end := s.startQuery(ctx, queryUserPut)
	defer end()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("put user %s: %w", u.Name, err)
	}
	// After Commit, Rollback does nothing (it returns sql.ErrTxDone).
	defer func() { _ = tx.Rollback() }()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	scopes := strings.Join(u.Scopes, " ")
	// Insert first: it takes the write lock, so the update below cannot
	// race another put of the same name, and RowsAffected tells created
	// from updated without comparing timestamps.
	res, err := tx.ExecContext(ctx, `
INSERT INTO users (name, password_hash, scopes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
ON CONFLICT (name) DO NOTHING`, u.Name, u.PasswordHash, scopes, now)
	if err != nil {
		return false, fmt.Errorf("put user %s: %w", u.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("put user %s: %w", u.Name, err)
	}
	if n == 0 {
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ?2, scopes = ?3, updated_at = ?4 WHERE name = ?1`,
			u.Name, u.PasswordHash, scopes, now); err != nil {
			return false, fmt.Errorf("update user %s: %w", u.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit put of user %s: %w", u.Name, err)
	}
	return n == 1, nil
}

// User returns the user with the given name, or an error wrapping
// ErrNotFound.
func (s *store) User(ctx context.Context, name string) (User, error) {
	ctx, end := s.startQuery(ctx, queryUserGet)
	defer end()
	var u User
	var scopes, created, updated string
	err := s.db.QueryRowContext(ctx,
		`SELECT name, password_hash, scopes, created_at, updated_at FROM users WHERE name = ?1`, name).
		Scan(&u.Name, &u.PasswordHash, &scopes, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, fmt.Errorf("get user %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("get user %s: %w", name, err)
	}
	u.Scopes = strings.Fields(scopes)
	if u.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return User{}, fmt.Errorf("get user %s: parse created_at %q: %w", name, created, err)
	}
	if u.UpdatedAt, err = time.Parse(time.RFC3339Nano, updated); err != nil {
		return User{}, fmt.Errorf("get user %s: parse updated_at %q: %w", name, updated, err)
	}
	return u, nil
}

// PutUser creates or replaces a user and reports whether it created it. u
// carries a bcrypt hash, never a password; a u that fails UserPut.Validate
// is answered invalid.
func (c *Client) PutUser(ctx context.Context, requestID string, u UserPut) (created bool, err error) {
	reply, err := call[UserPutReply](ctx, c, wire.DBUserPut, requestID, u)
	if err != nil {
		return false, err
	}
	if reply.Name != u.Name {
		return false, fmt.Errorf("%s reply %+v: want user %s", wire.DBUserPut, reply, u.Name)
	}
	return reply.Created, nil
}

// GetUser returns the user with the given name, with its password hash.
// An unknown user is answered not_found (matching ErrNotFound); a name
// that fails ValidateUserName is answered invalid.
func (c *Client) GetUser(ctx context.Context, requestID, name string) (User, error) {
	return call[User](ctx, c, wire.DBUserGet, requestID, userGetRequest{Name: name})
}
