package dbsvc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
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

// CreateItem inserts a new item with version 1 and returns it with the id
// the database gave it. The caller validates u.
func (s *store) CreateItem(ctx context.Context, u ItemUpdate) (Item, error) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	ctx, end := s.startQuery(ctx, queryItemCreate)
	defer end()
	it, err := scanItem(s.db.QueryRowContext(ctx, `
INSERT INTO items (name, price_cents, stock, version, updated_at) VALUES (?1, ?2, ?3, 1, ?4)
RETURNING `+itemColumns, u.Name, u.PriceCents, u.Stock, now))
	if err != nil {
		return Item{}, fmt.Errorf("create item: %w", err)
	}
	return it, nil
}

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
		_, err := tx.ExecContext(ctx, `DELETE FROM items WHERE id = ?1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete item %d: %w", id, err)
	}
	return nil
}

// inItemTx runs write in a write transaction, once it has read item id
// (cur) and found its version allowed by ifMatch, and commits it if write
// returns nil. A missing item is an error wrapping ErrNotFound, a version
// ifMatch does not allow one wrapping ErrVersionMismatch; then write does
// not run. Its callers bound ctx (startQuery).
func (s *store) inItemTx(ctx context.Context, id int64, ifMatch []int64, write func(tx *sql.Tx, cur Item) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	// After Commit, Rollback does nothing (it returns sql.ErrTxDone).
	defer func() { _ = tx.Rollback() }()
	cur, err := scanItem(tx.QueryRowContext(ctx, itemSQL, id))
	if err != nil {
		return err
	}
	if !versionMatches(cur.Version, ifMatch) {
		return fmt.Errorf("at version %d: %w", cur.Version, ErrVersionMismatch)
	}
	if err := write(tx, cur); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
