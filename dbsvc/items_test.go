package dbsvc

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/wire"
)

// requestError sends body to subject as a raw NATS request and returns the
// error code and message of the reply ("" for a normal reply).
func requestError(t *testing.T, nc *nats.Conn, subject, body string) (apperr.Code, string) {
	t.Helper()
	msg, err := nc.RequestWithContext(t.Context(), subject, []byte(body))
	if err != nil {
		t.Fatalf("Request(%s, %q) = %v", subject, body, err)
	}
	return apperr.Code(msg.Header.Get(micro.ErrorCodeHeader)), msg.Header.Get(micro.ErrorHeader)
}

// badBody is a request body a write endpoint answers invalid, with a
// message that holds inMessage.
type badBody struct{ name, body, inMessage string }

// expectInvalid sends each of bodies to subject and checks its answer.
func expectInvalid(t *testing.T, nc *nats.Conn, subject string, bodies []badBody) {
	t.Helper()
	for _, tt := range bodies {
		t.Run("bad body "+tt.name, func(t *testing.T) {
			code, msg := requestError(t, nc, subject, tt.body)
			if code != apperr.Invalid || !strings.Contains(msg, tt.inMessage) {
				t.Errorf("Request(%s, %.60q) = %q %q, want invalid naming %q", subject, tt.body, code, msg, tt.inMessage)
			}
		})
	}
}

// mustItem reads item id through c, failing the test if it cannot.
func mustItem(t *testing.T, c *Client, id int64) Item {
	t.Helper()
	it, err := c.Item(t.Context(), "", id)
	if err != nil {
		t.Fatalf("Item(%d) = %v, want nil error", id, err)
	}
	return it
}

// itemCount counts the rows of items.
func itemCount(t *testing.T, c *Client) int {
	t.Helper()
	n := 0
	for after := int64(0); ; {
		page, err := c.ListItems(t.Context(), "", after, MaxListLimit)
		if err != nil {
			t.Fatalf("ListItems(%d) = %v", after, err)
		}
		n += len(page.Items)
		if page.NextAfterID == 0 {
			return n
		}
		after = page.NextAfterID
	}
}

func TestRunCreatesItems(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()

	u := ItemUpdate{Name: "New Widget", PriceCents: 2500, Stock: 3}
	created, err := db.client.CreateItem(ctx, "req-create", u, CreateKey{})
	if err != nil || created.Replayed {
		t.Fatalf("CreateItem(%+v) = %+v, %v; want a new item, nil error", u, created, err)
	}
	got := created.Item
	// The seeded ids are 1..SeedItems: the next one is the new item's.
	want := Item{ID: SeedItems + 1, Name: u.Name, PriceCents: u.PriceCents, Stock: u.Stock, Version: 1, UpdatedAt: got.UpdatedAt}
	if diff := cmp.Diff(want, got); diff != "" || got.UpdatedAt.IsZero() {
		t.Errorf("CreateItem() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(got, mustItem(t, db.client, got.ID)); diff != "" {
		t.Errorf("Item(%d) after create mismatch (-created +read):\n%s", got.ID, diff)
	}

	bad := []badBody{
		{"empty object", `{}`, "name, price_cents, stock"},
		{"no price nor stock", `{"name":"x"}`, "fields price_cents, stock"},
		{"no stock", `{"name":"x","price_cents":1}`, "field stock"},
		{"null stock", `{"name":"x","price_cents":1,"stock":null}`, "field stock"},
		{"empty name", `{"name":"","price_cents":1,"stock":1}`, "name must not be empty"},
		{"long name", `{"name":"` + strings.Repeat("n", MaxNameLen+1) + `","price_cents":1,"stock":1}`, "name must be at most"},
		{"negative price", `{"name":"x","price_cents":-1,"stock":1}`, "price_cents must be >= 0"},
		{"negative stock", `{"name":"x","price_cents":1,"stock":-1}`, "stock must be >= 0"},
		{"unknown field", `{"name":"x","price_cents":1,"stock":1,"id":5}`, "id"},
		{"not an object", `[1]`, ""},
	}
	expectInvalid(t, nc, wire.DBItemCreate, bad)
	if n := itemCount(t, db.client); n != SeedItems+1 {
		t.Errorf("items after one create and %d refused ones = %d, want %d", len(bad), n, SeedItems+1)
	}
}

func TestRunUpdateRequiresEveryField(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	before := mustItem(t, db.client, 7)

	expectInvalid(t, nc, wire.DBItemUpdate, []badBody{
		{"only a name", `{"id":7,"name":"x"}`, "missing (or null) required fields price_cents, stock"},
		{"no name", `{"id":7,"price_cents":5,"stock":5}`, "field name"},
		{"null price", `{"id":7,"name":"x","price_cents":null,"stock":1}`, "field price_cents"},
	})
	if diff := cmp.Diff(before, mustItem(t, db.client, 7)); diff != "" {
		t.Errorf("item 7 after refused partial updates changed (-before +after):\n%s", diff)
	}
}

func TestRunPatchesItems(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	before := mustItem(t, db.client, 9)

	stock := int64(42)
	got, err := db.client.PatchItem(ctx, "req-patch", 9, ItemFields{Stock: &stock})
	if err != nil {
		t.Fatalf("PatchItem(9, stock 42) = %v, want nil error", err)
	}
	want := before
	want.Stock, want.Version, want.UpdatedAt = 42, before.Version+1, got.UpdatedAt
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("PatchItem(9, stock 42) mismatch (-want +got):\n%s", diff)
	}
	if !got.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("PatchItem(9).UpdatedAt = %v, want after %v", got.UpdatedAt, before.UpdatedAt)
	}

	// An empty patch changes nothing, not even the version.
	same, err := db.client.PatchItem(ctx, "", 9, ItemFields{})
	if err != nil || !cmp.Equal(same, got) {
		t.Errorf("PatchItem(9, {}) = %+v, %v; want the item unchanged, %+v", same, err, got)
	}

	_, err = db.client.PatchItem(ctx, "", 999_999, ItemFields{Stock: &stock})
	if codeOf(err) != apperr.NotFound || !errors.Is(err, ErrNotFound) {
		t.Errorf("PatchItem(999999) = %v, want not_found matching ErrNotFound", err)
	}
	expectInvalid(t, nc, wire.DBItemPatch, []badBody{
		{"empty name", `{"id":9,"name":""}`, "name must not be empty"},
		{"negative price", `{"id":9,"price_cents":-5}`, "price_cents must be >= 0"},
		{"negative stock", `{"id":9,"stock":-1}`, "stock must be >= 0"},
		{"unknown field", `{"id":9,"colour":"red"}`, "colour"},
		{"id 0", `{"id":0,"stock":1}`, badIDMessage},
	})
	if diff := cmp.Diff(got, mustItem(t, db.client, 9)); diff != "" {
		t.Errorf("item 9 after refused patches changed (-want +got):\n%s", diff)
	}
}

// TestRunIfMatch: every write of an existing item happens only when the
// item is at one of the versions it names, and otherwise writes nothing.
func TestRunIfMatch(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	stale := func(t *testing.T, what string, err error) {
		t.Helper()
		if codeOf(err) != apperr.PreconditionFailed || !errors.Is(err, ErrVersionMismatch) {
			t.Errorf("%s = %v, want precondition_failed matching ErrVersionMismatch", what, err)
		}
	}

	v1, err := db.client.UpdateItem(ctx, "", 11, ItemUpdate{Name: "first", PriceCents: 1, Stock: 1}, 1)
	if err != nil || v1.Version != 2 {
		t.Fatalf("UpdateItem(11, if 1) = %+v, %v; want version 2", v1, err)
	}
	_, err = db.client.UpdateItem(ctx, "", 11, ItemUpdate{Name: "lost", PriceCents: 2, Stock: 2}, 1)
	stale(t, "UpdateItem(11, if 1) at version 2", err)
	price := int64(99)
	_, err = db.client.PatchItem(ctx, "", 11, ItemFields{PriceCents: &price}, 1, 3)
	stale(t, "PatchItem(11, if 1 or 3) at version 2", err)
	// An empty patch checks the precondition too.
	_, err = db.client.PatchItem(ctx, "", 11, ItemFields{}, 1)
	stale(t, "PatchItem(11, {}, if 1) at version 2", err)
	err = db.client.DeleteItem(ctx, "", 11, 0)
	stale(t, "DeleteItem(11, if 0) at version 2", err)
	if diff := cmp.Diff(v1, mustItem(t, db.client, 11)); diff != "" {
		t.Errorf("item 11 after refused conditional writes changed (-want +got):\n%s", diff)
	}

	// One of several versions is enough.
	v2, err := db.client.PatchItem(ctx, "", 11, ItemFields{PriceCents: &price}, 7, 2)
	if err != nil || v2.Version != 3 || v2.PriceCents != 99 || v2.Name != "first" {
		t.Errorf("PatchItem(11, if 7 or 2) at version 2 = %+v, %v; want version 3, price 99, name kept", v2, err)
	}
	// A missing item is not_found whatever the precondition.
	if _, err := db.client.UpdateItem(ctx, "", 999_999, ItemUpdate{Name: "x"}, 1); codeOf(err) != apperr.NotFound {
		t.Errorf("UpdateItem(999999, if 1) = %v, want not_found", err)
	}
	if err := db.client.DeleteItem(ctx, "", 11, 3); err != nil {
		t.Errorf("DeleteItem(11, if 3) at version 3 = %v, want nil error", err)
	}
	if _, err := db.client.Item(ctx, "", 11); !errors.Is(err, ErrNotFound) {
		t.Errorf("Item(11) after conditional delete = %v, want not found", err)
	}
	if code, msg := requestError(t, nc, wire.DBItemUpdate, `{"id":12,"if_match":"1","name":"x","price_cents":1,"stock":1}`); code != apperr.Invalid {
		t.Errorf("update with if_match a string = %q %q, want invalid", code, msg)
	}
}

// TestStoreConcurrentWrites runs writes of one item at once, on the store
// (over NATS each endpoint answers one request at a time, but an update
// and a patch run together, as do two dbsvc processes on one file).
func TestStoreConcurrentWrites(t *testing.T) {
	t.Parallel()
	st := openTestStore(t, t.TempDir())
	ctx := t.Context()
	before, err := st.Item(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("patches of different fields all land", func(t *testing.T) {
		const n = 100
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for _, field := range []string{"price_cents", "stock"} {
			wg.Go(func() {
				// In order within a field, so its last value is n.
				for i := int64(1); i <= n; i++ {
					p := ItemFields{PriceCents: &i}
					if field == "stock" {
						p = ItemFields{Stock: &i}
					}
					if _, err := st.PatchItem(ctx, 20, p); err != nil {
						errs <- fmt.Errorf("PatchItem(20, %s %d) = %w", field, i, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		got, err := st.Item(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		if got.PriceCents != n || got.Stock != n || got.Name != before.Name || got.Version != before.Version+2*n {
			t.Errorf("item 20 after %d concurrent patches of price and of stock = %+v, want both %d, name kept, version %d",
				n, got, n, before.Version+2*n)
		}
	})

	t.Run("one of the writes conditional on one version wins", func(t *testing.T) {
		cur, err := st.Item(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		const n = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		won, lost := 0, 0
		for i := range n {
			wg.Go(func() {
				_, err := st.UpdateItem(ctx, 20, ItemUpdate{Name: fmt.Sprintf("writer %d", i), PriceCents: 1, Stock: 1}, cur.Version)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case errors.Is(err, ErrVersionMismatch):
					lost++
				default:
					t.Errorf("UpdateItem(20, if %d) = %v, want nil or ErrVersionMismatch", cur.Version, err)
				}
			})
		}
		wg.Wait()
		if won != 1 || lost != n-1 {
			t.Errorf("%d concurrent updates conditional on version %d: %d won, %d lost; want 1 and %d", n, cur.Version, won, lost, n-1)
		}
		if got, err := st.Item(ctx, 20); err != nil || got.Version != cur.Version+1 {
			t.Errorf("item 20 after them = %+v, %v; want version %d", got, err, cur.Version+1)
		}
	})
}

// TestStoreMigratesVersion1 opens a database as schema version 1 left it
// (items without a version, no item_creates): it is migrated in place, its
// data kept, every item at version 1, and the writes work, keyed creates
// included.
func TestStoreMigratesVersion1(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := openTestStore(t, dir)
	ctx := t.Context()
	// Schema version 1, as the code before the migration wrote it: the same
	// tables, without items.version and without item_creates. A rename
	// marks an item to find again.
	for _, stmt := range []string{
		`ALTER TABLE items DROP COLUMN version`,
		`DROP TABLE item_creates`,
		`UPDATE meta SET value = '1' WHERE key = 'schema_version'`,
		`UPDATE items SET name = 'from version 1' WHERE id = 3`,
	} {
		if _, err := old.db.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("make a version 1 database: %s: %v", stmt, err)
		}
	}
	wantReport, err := old.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	st := openTestStore(t, dir)
	if st.seeded {
		t.Errorf("openStore() on a version 1 database seeded it again")
	}
	var version string
	if err := st.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version); err != nil || version != "2" {
		t.Errorf("schema_version after the migration = %q, %v; want 2", version, err)
	}
	it, err := st.Item(ctx, 3)
	if err != nil || it.Name != "from version 1" || it.Version != 1 {
		t.Errorf("Item(3) after the migration = %+v, %v; want its name kept and version 1", it, err)
	}
	gotReport, err := st.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantReport, gotReport, volatile); diff != "" {
		t.Errorf("Report() after the migration differs (-before +after):\n%s", diff)
	}
	if it, err := st.UpdateItem(ctx, 3, ItemUpdate{Name: "migrated", PriceCents: 1, Stock: 1}, 1); err != nil || it.Version != 2 {
		t.Errorf("UpdateItem(3, if 1) after the migration = %+v, %v; want version 2", it, err)
	}
	if it, err := st.CreateItem(ctx, ItemUpdate{Name: "new", PriceCents: 1, Stock: 1}, CreateKey{}); err != nil || it.Version != 1 {
		t.Errorf("CreateItem() after the migration = %+v, %v; want version 1", it, err)
	}
	// Version 2's table of create keys is there: a keyed create, its
	// replay, and a delete that marks its key.
	key := CreateKey{Key: "migrated-key", BodyHash: bodyHash(`{"name":"keyed"}`)}
	first, err := st.CreateItem(ctx, ItemUpdate{Name: "keyed", PriceCents: 1, Stock: 1}, key)
	if err != nil || first.Replayed {
		t.Fatalf("CreateItem(key) after the migration = %+v, %v; want a new item", first, err)
	}
	if again, err := st.CreateItem(ctx, ItemUpdate{Name: "keyed", PriceCents: 1, Stock: 1}, key); err != nil || !again.Replayed || again.ID != first.ID {
		t.Errorf("CreateItem(key) again after the migration = %+v, %v; want item %d replayed", again, err, first.ID)
	}
	if err := st.DeleteItem(ctx, first.ID); err != nil {
		t.Errorf("DeleteItem(%d) after the migration = %v", first.ID, err)
	}
	if _, err := st.CreateItem(ctx, ItemUpdate{Name: "keyed", PriceCents: 1, Stock: 1}, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateItem(key) after its item's delete = %v, want ErrNotFound", err)
	}
}

// TestStoreCreatesItemCreates: a version 2 database written before
// version 2 had item_creates (by the unreleased code of the same version)
// gets the table when it is opened: schema's CREATE ... IF NOT EXISTS runs
// on every open.
func TestStoreCreatesItemCreates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := openTestStore(t, dir)
	if _, err := old.db.ExecContext(t.Context(), `DROP TABLE item_creates`); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	st := openTestStore(t, dir)
	key := CreateKey{Key: "after-reopen", BodyHash: bodyHash("x")}
	u := ItemUpdate{Name: "x", PriceCents: 1, Stock: 1}
	first, err := st.CreateItem(t.Context(), u, key)
	if err != nil {
		t.Fatalf("CreateItem(key) on the reopened database = %v", err)
	}
	if again, err := st.CreateItem(t.Context(), u, key); err != nil || !again.Replayed || again.ID != first.ID {
		t.Errorf("CreateItem(key) again = %+v, %v; want item %d replayed", again, err, first.ID)
	}
}

// TestStoreRefusesNewerSchema: a database of a schema version this code
// does not know (a newer scalelab's) is refused and left as it is.
func TestStoreRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openTestStore(t, dir)
	if _, err := st.db.ExecContext(t.Context(), `UPDATE meta SET value = '3' WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := openStore(t.Context(), storeConfig{Path: filepath.Join(dir, DBFile), SeedRows: testSeedRows,
		QueryTimeout: 10 * time.Second, MaxOpenConns: 1}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "schema version 3") {
		t.Fatalf("openStore() on schema version 3 = %v, want an error naming it", err)
	}
	raw, err := sql.Open("sqlite", filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var version string
	if err := raw.QueryRowContext(t.Context(), `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version); err != nil || version != "3" {
		t.Errorf("schema_version after the refusal = %q, %v; want 3, untouched", version, err)
	}
}
