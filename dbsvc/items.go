package dbsvc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrVersionMismatch is returned (wrapped) by a conditional write when the
// item's version is none of those the write allows (the gateway's
// If-Match): nothing was written. The service answers it with
// apperr.PreconditionFailed; callers check it with errors.Is.
var ErrVersionMismatch = errors.New("dbsvc: item version does not match")

// versionMatches reports whether an item at version v may be written under
// the precondition ifMatch: any version when it is empty, else one of its
// versions.
func versionMatches(v int64, ifMatch []int64) bool {
	return len(ifMatch) == 0 || slices.Contains(ifMatch, v)
}

// ErrKeyReused is returned (wrapped) by a create whose CreateKey created an
// item before from another body: nothing was written. The service answers
// it with apperr.Conflict; callers check it with errors.Is.
var ErrKeyReused = errors.New("dbsvc: create key already used with another body")

// CreateKey makes a create repeatable: the first create with a key creates
// the item, a repeat with the same key and body returns that item instead
// of a second one. The gateway sends it for a POST /items with an
// Idempotency-Key. The zero CreateKey makes an ordinary create.
type CreateKey struct {
	// Key names the create: the gateway's keyed hash of the client's
	// Idempotency-Key and token subject, so one caller's key is never
	// another's.
	Key string `json:"create_key,omitempty"`
	// BodyHash is the SHA-256, in lowercase hex, of the create's body in
	// canonical form: a repeat must have the same.
	BodyHash string `json:"body_hash,omitempty"`
}

// maxCreateKeyLen bounds CreateKey.Key, in bytes.
const maxCreateKeyLen = 255

// Validate reports what is wrong with k, or nil: a key and a hash go
// together, the key is at most maxCreateKeyLen bytes and the hash is 64
// lowercase hex digits.
func (k CreateKey) Validate() error {
	switch {
	case k == CreateKey{}:
		return nil
	case k.Key == "" || k.BodyHash == "":
		return errors.New("create_key and body_hash go together: give both or neither")
	case len(k.Key) > maxCreateKeyLen:
		return fmt.Errorf("create_key must be at most %d bytes, not %d", maxCreateKeyLen, len(k.Key))
	case len(k.BodyHash) != 64 || strings.Trim(k.BodyHash, "0123456789abcdef") != "":
		return errors.New("body_hash must be a SHA-256 in lowercase hex (64 digits)")
	}
	return nil
}

// CreatedItem is the answer to a create: the item, and whether it is the
// one an earlier create with the same CreateKey made (Replayed), as it is
// now, rather than a new one. Its JSON is the item's with "replayed": true
// added for a replay.
type CreatedItem struct {
	Item
	Replayed bool `json:"replayed,omitempty"`
}

// CreateItem inserts a new item with version 1 and returns it with the id
// the database gave it. The caller validates u and key.
//
// With a key, it first looks the key up, in the same write transaction
// (so two creates with one key, even from two dbsvc processes, make one
// item): a key that created an item from the same body (key.BodyHash)
// returns that item as it is now, Replayed; from another body, an error
// wrapping ErrKeyReused; whose item was deleted since, an error wrapping
// ErrNotFound. A new key is stored with the new item. Only a create that
// returns an item not Replayed writes anything.
func (s *store) CreateItem(ctx context.Context, u ItemUpdate, key CreateKey) (CreatedItem, error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ctx, end := s.startQuery(ctx, queryItemCreate)
	defer end()
	var res CreatedItem
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if key.Key != "" {
			it, found, err := keyedItem(ctx, tx, key)
			if err != nil || found {
				res = CreatedItem{Item: it, Replayed: found}
				return err
			}
		}
		it, err := scanItem(tx.QueryRowContext(ctx, `
INSERT INTO items (name, price_cents, stock, version, updated_at) VALUES (?1, ?2, ?3, 1, ?4)
RETURNING `+itemColumns, u.Name, u.PriceCents, u.Stock, now))
		if err != nil {
			return err
		}
		if key.Key != "" {
			if _, err := tx.ExecContext(ctx, `
INSERT INTO item_creates (key, body_hash, item_id, created_at) VALUES (?1, ?2, ?3, ?4)`,
				key.Key, key.BodyHash, it.ID, now); err != nil {
				return fmt.Errorf("store create key: %w", err)
			}
		}
		res = CreatedItem{Item: it}
		return nil
	})
	if err != nil {
		return CreatedItem{}, fmt.Errorf("create item: %w", err)
	}
	return res, nil
}

// keyedItem looks key up in tx: found is false for a key no create used;
// else it returns the item that key created, as it is now, or an error
// wrapping ErrKeyReused (another body) or ErrNotFound (the item was
// deleted).
func keyedItem(ctx context.Context, tx *sql.Tx, key CreateKey) (it Item, found bool, err error) {
	var (
		hash    string
		id      int64
		deleted sql.NullString
	)
	err = tx.QueryRowContext(ctx, `SELECT body_hash, item_id, deleted_at FROM item_creates WHERE key = ?1`, key.Key).
		Scan(&hash, &id, &deleted)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return Item{}, false, nil
	case err != nil:
		return Item{}, false, fmt.Errorf("read create key: %w", err)
	case hash != key.BodyHash:
		return Item{}, false, fmt.Errorf("key of item %d: %w", id, ErrKeyReused)
	case deleted.Valid:
		return Item{}, false, &createdDeletedError{id: id}
	}
	it, err = scanItem(tx.QueryRowContext(ctx, itemSQL, id))
	if errors.Is(err, ErrNotFound) {
		// Deleted without DeleteItem (by hand): deleted all the same.
		return Item{}, false, &createdDeletedError{id: id}
	}
	return it, err == nil, err
}

// createdDeletedError is the error of a repeated create whose item was
// deleted since. It matches ErrNotFound.
type createdDeletedError struct{ id int64 }

func (e *createdDeletedError) Error() string {
	return fmt.Sprintf("the item this key created, %d, was deleted", e.id)
}

func (e *createdDeletedError) Unwrap() error { return ErrNotFound }

// UpdateItem replaces the name, price and stock of item id and returns the
// updated item. ifMatch is the write's precondition, as for PatchItem. The
// caller validates u.
func (s *store) UpdateItem(ctx context.Context, id int64, u ItemUpdate, ifMatch ...int64) (Item, error) {
	return s.writeItem(ctx, queryItemUpdate, "update item", id, u.fields(), ifMatch)
}

// PatchItem sets the fields p holds on item id, keeps the others, and
// returns the item as it then is. The item must have one of the versions
// in ifMatch (none: any), else the error wraps ErrVersionMismatch; a
// missing item is an error wrapping ErrNotFound. Either way nothing is
// written. An empty p writes nothing and returns the item as it is. The
// caller validates p.
func (s *store) PatchItem(ctx context.Context, id int64, p ItemFields, ifMatch ...int64) (Item, error) {
	return s.writeItem(ctx, queryItemPatch, "patch item", id, p, ifMatch)
}

// writeItem is UpdateItem and PatchItem: in one transaction (which holds
// the write lock from its start, see openStore), it reads item id, checks
// its version against ifMatch and writes the fields f holds, with the
// version one up. So two writes of one item never interleave: a patch of
// the price and a patch of the stock both land, and a write conditional
// on version N fails once another write made it N+1.
func (s *store) writeItem(ctx context.Context, query, what string, id int64, f ItemFields, ifMatch []int64) (Item, error) {
	ctx, end := s.startQuery(ctx, query)
	defer end()
	var it Item
	err := s.inItemTx(ctx, id, ifMatch, func(tx *sql.Tx, cur Item) error {
		if f.empty() {
			it = cur
			return nil
		}
		now := time.Now().UTC().Format(time.RFC3339Nano)
		var err error
		// COALESCE keeps the fields f leaves out.
		it, err = scanItem(tx.QueryRowContext(ctx, `
UPDATE items SET name = COALESCE(?2, name), price_cents = COALESCE(?3, price_cents), stock = COALESCE(?4, stock),
	version = version + 1, updated_at = ?5
WHERE id = ?1
RETURNING `+itemColumns, id, f.Name, f.PriceCents, f.Stock, now))
		return err
	})
	if err != nil {
		return Item{}, fmt.Errorf("%s %d: %w", what, id, err)
	}
	return it, nil
}

// DeleteItem deletes item id together with its sales, in one transaction,
// under the precondition ifMatch (as for PatchItem): it returns an error
// wrapping ErrNotFound or ErrVersionMismatch, and deletes nothing, when
// the item is missing or at another version. The sales go because they
// reference the item (foreign keys are on); the data report no longer
// counts them.
func (s *store) DeleteItem(ctx context.Context, id int64, ifMatch ...int64) error {
	ctx, end := s.startQuery(ctx, queryItemDelete)
	defer end()
	err := s.inItemTx(ctx, id, ifMatch, func(tx *sql.Tx, _ Item) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sales WHERE item_id = ?1`, id); err != nil {
			return fmt.Errorf("delete sales: %w", err)
		}
		// A repeat of the create that made the item is told it was
		// deleted, even once its id is a new item's.
		if _, err := tx.ExecContext(ctx, `UPDATE item_creates SET deleted_at = ?2 WHERE item_id = ?1 AND deleted_at IS NULL`,
			id, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("mark create keys: %w", err)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM items WHERE id = ?1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete item %d: %w", id, err)
	}
	return nil
}

// inItemTx runs write in a write transaction (inTx), once it has read
// item id (cur) and found its version allowed by ifMatch. A missing item
// is an error wrapping ErrNotFound, a version ifMatch does not allow one
// wrapping ErrVersionMismatch; then write does not run. Its callers bound
// ctx (startQuery).
func (s *store) inItemTx(ctx context.Context, id int64, ifMatch []int64, write func(tx *sql.Tx, cur Item) error) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := scanItem(tx.QueryRowContext(ctx, itemSQL, id))
		if err != nil {
			return err
		}
		if !versionMatches(cur.Version, ifMatch) {
			return fmt.Errorf("at version %d: %w", cur.Version, ErrVersionMismatch)
		}
		return write(tx, cur)
	})
}

// inTx runs write in a write transaction, which holds the write lock from
// its start (see openStore), and commits it if write returns nil; else
// nothing write did is kept. Its callers bound ctx (startQuery).
func (s *store) inTx(ctx context.Context, write func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	// After Commit, Rollback does nothing (it returns sql.ErrTxDone).
	defer func() { _ = tx.Rollback() }()
	if err := write(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
