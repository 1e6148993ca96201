package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestCreateItemIdempotencyKey: POST /items with an Idempotency-Key, over
// two gateways. A repeat with the key and the same body (in any spelling)
// answers the first create's item as it is now, with 201, Location, its
// ETag and Idempotent-Replayed; the key with another body is a 409, once
// the item is deleted a 404, an invalid key a 400, and none of these
// writes; another subject's same key is another create.
func TestCreateItemIdempotencyKey(t *testing.T) {
	t.Parallel()
	st := startStack(t, 2000)
	gwA := startGateway(t, testutil.Connect(t, st.ns))
	gwB := startGateway(t, testutil.Connect(t, st.ns))
	alice := tokenFor(t, "alice", auth.ScopeItemsRead, auth.ScopeItemsWrite)
	bob := tokenFor(t, "bob", auth.ScopeItemsRead, auth.ScopeItemsWrite)
	key := map[string]string{"Idempotency-Key": "order-42"}
	const body = `{"name":"Keyed","price_cents":1250,"stock":4}`

	// created checks a create's answer and returns its item.
	created := func(t *testing.T, what string, r result, replayed bool) dbsvc.Item {
		t.Helper()
		if r.status != http.StatusCreated {
			t.Fatalf("%s = %d %s, want 201", what, r.status, r.body)
		}
		it := itemBody(t, r)
		want := ""
		if replayed {
			want = "true"
		}
		if loc, tag, got := r.header.Get("Location"), r.header.Get("ETag"), r.header.Get("Idempotent-Replayed"); loc != fmt.Sprintf("/items/%d", it.ID) || tag != etag(it.Version) || got != want {
			t.Errorf("%s: Location %q, ETag %q, Idempotent-Replayed %q for %+v; want /items/%d, %s, %q",
				what, loc, tag, got, it, it.ID, etag(it.Version), want)
		}
		return it
	}
	// last is the highest item id, read from the database.
	last := func(t *testing.T) int64 {
		t.Helper()
		r := get(t, fmt.Sprintf("%s/items?after_id=%d&limit=100", gwA, dbsvc.SeedItems), alice)
		var page dbsvc.ItemPage
		if err := json.Unmarshal(r.body, &page); err != nil || r.status != http.StatusOK || len(page.Items) == 0 {
			t.Fatalf("GET /items after %d = %d %s", dbsvc.SeedItems, r.status, r.body)
		}
		return page.Items[len(page.Items)-1].ID
	}

	first := created(t, "POST /items with a key", send(t, http.MethodPost, gwA+"/items", alice, body, key), false)
	if first.ID != dbsvc.SeedItems+1 || first.Version != 1 {
		t.Fatalf("POST /items with a key = %+v, want item %d at version 1", first, dbsvc.SeedItems+1)
	}
	// The same body, spelled otherwise, through the other gateway.
	again := created(t, "the repeat", send(t, http.MethodPost, gwB+"/items", alice, `{ "stock": 4, "price_cents": 1250, "name": "Keyed" }`, key), true)
	if diff := cmp.Diff(first, again); diff != "" {
		t.Errorf("the repeat answered another item (-first +repeat):\n%s", diff)
	}
	// The replay is the item as it is now, with its current ETag.
	r := send(t, http.MethodPatch, gwA+fmt.Sprintf("/items/%d", first.ID), alice, `{"stock":9}`, mergePatch)
	patched := itemBody(t, r)
	if now := created(t, "the repeat after a patch", send(t, http.MethodPost, gwA+"/items", alice, body, key), true); !cmp.Equal(now, patched) {
		t.Errorf("the repeat after a patch = %+v, want the patched item %+v", now, patched)
	}

	r = send(t, http.MethodPost, gwB+"/items", alice, `{"name":"Keyed","price_cents":1250,"stock":5}`, key)
	if r.status != http.StatusConflict || errorCode(t, r) != "conflict" || !strings.Contains(string(r.body), "Idempotency-Key") {
		t.Errorf("the key with another body = %d %s, want 409 conflict naming Idempotency-Key", r.status, r.body)
	}
	for _, k := range []string{strings.Repeat("k", 256), "tab\there"} {
		r := send(t, http.MethodPost, gwA+"/items", alice, body, map[string]string{"Idempotency-Key": k})
		if r.status != http.StatusBadRequest || errorCode(t, r) != "invalid" || !strings.Contains(string(r.body), "Idempotency-Key") {
			t.Errorf("Idempotency-Key %.20q = %d %s, want 400 invalid naming it", k, r.status, r.body)
		}
	}
	if got := last(t); got != first.ID {
		t.Errorf("the last item after the repeats and refusals is %d, want %d: something was written", got, first.ID)
	}

	// Another subject's same key is its own.
	theirs := created(t, "bob's POST with alice's key", send(t, http.MethodPost, gwA+"/items", bob, body, key), false)
	if theirs.ID == first.ID {
		t.Errorf("bob's create with alice's key answered her item %d", first.ID)
	}

	// A create whose answer was lost (dbsvc created the item, the gateway
	// never answered): the retry answers it, and no gateway keeps serving
	// the absence of its id that it cached before.
	next := theirs.ID + 1
	for _, base := range []string{gwA, gwB} {
		for i := range 2 {
			r := get(t, fmt.Sprintf("%s/items/%d", base, next), alice)
			if r.status != http.StatusNotFound || (i == 1 && r.header.Get("X-Cache") == "miss") {
				t.Fatalf("GET %s/items/%d = %d X-Cache %q, want a 404, cached on the second read", base, next, r.status, r.header.Get("X-Cache"))
			}
		}
	}
	const lostBody = `{"name":"Lost","price_cents":5,"stock":5}` // canonical already
	sum := sha256.Sum256([]byte(lostBody))
	lostKey := dbsvc.CreateKey{Key: idempotentID(itemCreateKey(testKeys.Secret), "alice", "lost-1"), BodyHash: hex.EncodeToString(sum[:])}
	lost, err := dbsvc.NewClient(testutil.Connect(t, st.ns)).CreateItem(t.Context(), "", dbsvc.ItemUpdate{Name: "Lost", PriceCents: 5, Stock: 5}, lostKey)
	if err != nil || lost.ID != next {
		t.Fatalf("CreateItem(lost-1) = %+v, %v; want item %d", lost, err, next)
	}
	retry := created(t, "the retry of the lost create", send(t, http.MethodPost, gwA+"/items", alice, lostBody, map[string]string{"Idempotency-Key": "lost-1"}), true)
	if !cmp.Equal(retry, lost.Item) {
		t.Errorf("the retry of the lost create = %+v, want %+v", retry, lost.Item)
	}
	for _, base := range []string{gwA, gwB} {
		if r := get(t, fmt.Sprintf("%s/items/%d", base, next), alice); r.status != http.StatusOK {
			t.Errorf("GET %s/items/%d after the retry = %d %s (X-Cache %s), want 200", base, next, r.status, r.body, r.header.Get("X-Cache"))
		}
	}

	// Deleted: the repeat says so and creates nothing.
	if r := send(t, http.MethodDelete, gwA+fmt.Sprintf("/items/%d", first.ID), alice, "", nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE /items/%d = %d %s", first.ID, r.status, r.body)
	}
	r = send(t, http.MethodPost, gwB+"/items", alice, body, key)
	if r.status != http.StatusNotFound || errorCode(t, r) != "not_found" || !strings.Contains(string(r.body), "deleted") {
		t.Errorf("the repeat after the delete = %d %s, want 404 not_found saying the item was deleted", r.status, r.body)
	}
	if got := last(t); got != next {
		t.Errorf("the last item after the repeat of a deleted create is %d, want %d", got, next)
	}

	// Without a key, the same body twice is two items.
	a := created(t, "POST without a key", send(t, http.MethodPost, gwA+"/items", alice, body, nil), false)
	b := created(t, "POST without a key again", send(t, http.MethodPost, gwA+"/items", alice, body, nil), false)
	if a.ID == b.ID {
		t.Errorf("two creates without a key made one item, %d", a.ID)
	}
}
