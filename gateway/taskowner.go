package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// The labels of the keys of idempotentID, one per use, so that one
// caller's Idempotency-Key gives a task id and an item create key that
// have nothing in common. Changing one (v2) changes every id derived under
// it, like a secret rotation does.
const (
	taskIDLabel     = "scalelab task id v1"
	itemCreateLabel = "scalelab item create key v1"
)

// taskIDKey derives the key of idempotentID for task ids (POST /longtask)
// from the gateways' HS256 secret (deriveIDKey).
func taskIDKey(secret []byte) []byte { return deriveIDKey(secret, taskIDLabel) }

// itemCreateKey derives the key of idempotentID for the create keys of
// POST /items (dbsvc.CreateKey) from the gateways' HS256 secret (deriveIDKey).
func itemCreateKey(secret []byte) []byte { return deriveIDKey(secret, itemCreateLabel) }

// deriveIDKey derives a key of idempotentID, for the use label names, from the
// gateways' HS256 secret. Every gateway has that secret (auth.Keys
// requires it even when tokens are also verified with a JWKS), so every
// gateway derives the same ids with nothing new to distribute; the
// derivation keeps the key separate from the one that signs tokens.
// Rotating the secret changes every derived id: a retry that crosses a
// rotation creates a new task or item instead of replaying the old one.
func deriveIDKey(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// idempotentID derives an id (a task's, an item create's) from the caller
// and its Idempotency-Key: the same pair always gives the same id. It is a
// keyed hash (HMAC-SHA256 with taskIDKey or itemCreateKey), not a plain
// one, so somebody who knows or guesses a subject and a key still cannot
// compute the id; and the subject is part of the input, so two callers
// with the same key get different tasks (or items). Like task.NewID, it is
// 16 bytes in hex.
func idempotentID(key []byte, subject, idemKey string) string {
	m := hmac.New(sha256.New, key)
	// The subject's length first, so that no other (subject, key) pair
	// gives the same input: a sub may contain any character.
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(len(subject))))
	m.Write([]byte(subject))
	m.Write([]byte(idemKey))
	return hex.EncodeToString(m.Sum(nil)[:task.IDBytes])
}

// visibleTo reports whether the token's holder may see and change rec: its
// owner, or a token with tasks:admin. A record without an owner (written
// before tasks had owners) is visible only to tasks:admin.
func visibleTo(claims *auth.Claims, rec *task.Record) bool {
	if claims == nil {
		return false
	}
	if claims.HasScope(auth.ScopeTasksAdmin) {
		return true
	}
	return rec.Owner != "" && rec.Owner == claims.Subject
}

// errNotVisible stops a read or write of a task the caller may not see. It
// wraps task.ErrNotFound, so every path answers it exactly as it answers a
// missing id: existence is not revealed.
var errNotVisible = errors.Join(task.ErrNotFound, errors.New("gateway: task of another subject"))
