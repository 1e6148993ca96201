package dbsvc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/wire"
)

// bodyHash is a CreateKey.BodyHash: the SHA-256 of body, in hex.
func bodyHash(body string) string {
	sum := sha256.Sum256([]byte(body))
	return hex.EncodeToString(sum[:])
}

// TestRunCreateKey: a create with a key makes one item; a repeat with the
// key and body returns that item as it is now, replayed, and writes
// nothing; the key with another body is a conflict, and once its item is
// deleted a not_found, even after a new item got the deleted one's id.
func TestRunCreateKey(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	u := ItemUpdate{Name: "Keyed", PriceCents: 700, Stock: 2}
	key := CreateKey{Key: "k-1", BodyHash: bodyHash("body 1")}

	first, err := db.client.CreateItem(ctx, "", u, key)
	if err != nil || first.Replayed || first.ID != SeedItems+1 || first.Version != 1 {
		t.Fatalf("CreateItem(key) = %+v, %v; want item %d at version 1, not replayed", first, err, SeedItems+1)
	}
	again, err := db.client.CreateItem(ctx, "", u, key)
	if err != nil || !again.Replayed || !cmp.Equal(again.Item, first.Item) {
		t.Errorf("CreateItem(key) again = %+v, %v; want %+v replayed", again, err, first.Item)
	}
	// The replay answers the item as it is now: written since, at version 2.
	stock := int64(9)
	patched, err := db.client.PatchItem(ctx, "", first.ID, ItemFields{Stock: &stock})
	if err != nil {
		t.Fatal(err)
	}
	if now, err := db.client.CreateItem(ctx, "", u, key); err != nil || !now.Replayed || !cmp.Equal(now.Item, patched) {
		t.Errorf("CreateItem(key) after a patch = %+v, %v; want the patched item %+v replayed", now, err, patched)
	}
	// Only the key and the body hash matter: the hash is the body's.
	other := ItemUpdate{Name: "Other", PriceCents: 1, Stock: 1}
	_, err = db.client.CreateItem(ctx, "", other, CreateKey{Key: key.Key, BodyHash: bodyHash("body 2")})
	if codeOf(err) != apperr.Conflict || !errors.Is(err, ErrKeyReused) || !strings.Contains(err.Error(), "Idempotency-Key was already used with a different body") {
		t.Errorf("CreateItem(key, another body) = %v, want conflict matching ErrKeyReused, naming Idempotency-Key", err)
	}
	if n := itemCount(t, db.client); n != SeedItems+1 {
		t.Errorf("items after one keyed create, its replays and a conflict = %d, want %d", n, SeedItems+1)
	}

	// Deleted: the repeat is told so, and creates nothing, also once
	// SQLite gave the deleted item's id (the highest) to a new item.
	if err := db.client.DeleteItem(ctx, "", first.ID); err != nil {
		t.Fatal(err)
	}
	reused, err := db.client.CreateItem(ctx, "", ItemUpdate{Name: "Reused id", PriceCents: 1, Stock: 1}, CreateKey{})
	if err != nil || reused.ID != first.ID {
		t.Fatalf("CreateItem() after deleting item %d = %+v, %v; want the id again (SQLite reuses the highest)", first.ID, reused, err)
	}
	_, err = db.client.CreateItem(ctx, "", u, key)
	if codeOf(err) != apperr.NotFound || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "was deleted") {
		t.Errorf("CreateItem(key) after its item's delete = %v, want not_found saying it was deleted", err)
	}
	if _, err = db.client.CreateItem(ctx, "", other, CreateKey{Key: key.Key, BodyHash: bodyHash("body 2")}); codeOf(err) != apperr.Conflict {
		t.Errorf("CreateItem(key, another body) after the delete = %v, want conflict", err)
	}
	if got := mustItem(t, db.client, first.ID); !cmp.Equal(got, reused.Item) {
		t.Errorf("item %d after the repeats = %+v, want %+v, untouched", first.ID, got, reused.Item)
	}

	// Another key is another create.
	second, err := db.client.CreateItem(ctx, "", u, CreateKey{Key: "k-2", BodyHash: bodyHash("body 1")})
	if err != nil || second.Replayed || second.ID == first.ID {
		t.Errorf("CreateItem(another key) = %+v, %v; want a new item", second, err)
	}

	hash := bodyHash("x")
	expectInvalid(t, nc, wire.DBItemCreate, []badBody{
		{"key without hash", `{"name":"x","price_cents":1,"stock":1,"create_key":"k-9"}`, "create_key and body_hash"},
		{"hash without key", `{"name":"x","price_cents":1,"stock":1,"body_hash":"` + hash + `"}`, "create_key and body_hash"},
		{"short hash", `{"name":"x","price_cents":1,"stock":1,"create_key":"k-9","body_hash":"abc"}`, "body_hash must be"},
		{"upper-case hash", `{"name":"x","price_cents":1,"stock":1,"create_key":"k-9","body_hash":"` + strings.ToUpper(hash) + `"}`, "body_hash must be"},
		{"long key", `{"name":"x","price_cents":1,"stock":1,"create_key":"` + strings.Repeat("k", maxCreateKeyLen+1) + `","body_hash":"` + hash + `"}`, "create_key must be at most"},
		{"key with a bad item", `{"name":"x","price_cents":-1,"stock":1,"create_key":"k-9","body_hash":"` + hash + `"}`, "price_cents must be >= 0"},
		{"key of another case", `{"name":"x","price_cents":1,"stock":1,"Create_Key":"k-9","body_hash":"` + hash + `"}`, "Create_Key"},
	})
	if n := itemCount(t, db.client); n != SeedItems+2 {
		t.Errorf("items at the end = %d, want %d (the reused id's and k-2's)", n, SeedItems+2)
	}
	// None of the refused creates stored its key.
	if _, err := db.client.CreateItem(ctx, "", u, CreateKey{Key: "k-9", BodyHash: hash}); err != nil {
		t.Errorf("CreateItem(k-9) after its refusals = %v, want a new item", err)
	}
}

// TestStoreConcurrentCreatesWithOneKey runs creates with one key at once
// on the store (as two dbsvc processes on one file would, or the retry of
// a create still running): one item is made, and every create answers it.
func TestStoreConcurrentCreatesWithOneKey(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	ctx := t.Context()
	u := ItemUpdate{Name: "Once", PriceCents: 1, Stock: 1}
	key := CreateKey{Key: "concurrent", BodyHash: bodyHash("once")}

	const n = 16
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ids      = map[int64]int{}
		replayed int
	)
	for range n {
		wg.Go(func() {
			res, err := st.CreateItem(ctx, u, key)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("CreateItem(key) = %v", err)
				return
			}
			ids[res.ID]++
			if res.Replayed {
				replayed++
			}
		})
	}
	wg.Wait()
	if len(ids) != 1 || replayed != n-1 {
		t.Errorf("%d concurrent creates with one key: items %v, %d replayed; want one item, %d replayed", n, ids, replayed, n-1)
	}
	var count int
	if err := st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM items`).Scan(&count); err != nil || count != SeedItems+1 {
		t.Errorf("items after them = %d, %v; want %d", count, err, SeedItems+1)
	}
}
