package cli

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/testutil"
)

// mergePatch is the Content-Type of a PATCH /items/{id} body.
var mergePatch = map[string]string{"Content-Type": "application/merge-patch+json"}

// upItem is an item as the API answers it.
type upItem struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
	Version    int64  `json:"version"`
	UpdatedAt  string `json:"updated_at"`
}

// etagOf is the ETag the API gives an item at version v.
func etagOf(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// doWith is do with extra headers (tryWith).
func (p *upRun) doWith(t *testing.T, method, path, auth string, body []byte, header map[string]string) response {
	t.Helper()
	r, err := p.tryWith(t, method, path, auth, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// warmEverywhere reads path through the balancer until every one of the
// gateways answers it (with status) from its near-cache.
func warmEverywhere(t *testing.T, p *upRun, bearer, path string, status, gateways int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		local := map[string]bool{}
		for range 2 * gateways {
			r := p.do(t, "GET", path, bearer, nil)
			if r.status != status {
				return fmt.Errorf("GET %s = %d %s, want %d", path, r.status, r.body, status)
			}
			if r.header.Get("X-Cache") == "local" {
				local[r.servedBy] = true
			}
		}
		if len(local) < gateways {
			return fmt.Errorf("gateways answering GET %s from their near-cache: %v, want all %d", path, local, gateways)
		}
		return nil
	})
}

// readsShow reads path n times through the balancer (so over every
// gateway) and fails unless each answer is 200 with want and its ETag.
func readsShow(t *testing.T, p *upRun, bearer, path, after string, want upItem, n int) {
	t.Helper()
	for i := range n {
		r := p.do(t, "GET", path, bearer, nil)
		got := decodeJSON[upItem](t, r)
		if r.status != http.StatusOK || got != want || r.header.Get("ETag") != etagOf(want.Version) {
			t.Fatalf("read %d after %s: %d %+v ETag %q from %s (X-Cache %s), want %+v with ETag %s",
				i, after, r.status, got, r.header.Get("ETag"), r.servedBy, r.header.Get("X-Cache"), want, etagOf(want.Version))
		}
	}
}

// TestUpItemsReadYourWrites: as TestUpReadYourWrites for PUT, with every
// gateway serving the item (or its absence) from its near-cache, a PATCH
// and a POST through the balancer are followed by 100 reads spread over
// all gateways, none showing the old state.
func TestUpItemsReadYourWrites(t *testing.T) {
	// A cached "no such item" must outlive the warm-up below.
	p := startUp(t, t.TempDir(), "--gateways", "3", "--cache-negative-ttl", "1m")
	bearer := "Bearer " + p.token

	warmEverywhere(t, p, bearer, "/items/42", http.StatusOK, 3)
	for round := range 5 {
		body := fmt.Sprintf(`{"stock":%d}`, 100+round)
		r := p.doWith(t, "PATCH", "/items/42", bearer, []byte(body), mergePatch)
		if r.status != http.StatusOK {
			t.Fatalf("PATCH /items/42 %s = %d %s", body, r.status, r.body)
		}
		patched := decodeJSON[upItem](t, r)
		if patched.Stock != int64(100+round) || r.header.Get("ETag") != etagOf(patched.Version) {
			t.Fatalf("PATCH /items/42 %s = %+v ETag %q, want the new stock and its version as ETag", body, patched, r.header.Get("ETag"))
		}
		readsShow(t, p, bearer, "/items/42", "PATCH "+body, patched, 100)
	}

	// The next ids are known (the seed's are 1..SeedItems), so their
	// absence can be cached everywhere first.
	for round := range 3 {
		id := int64(dbsvc.SeedItems + 1 + round)
		path := fmt.Sprintf("/items/%d", id)
		warmEverywhere(t, p, bearer, path, http.StatusNotFound, 3)
		body := fmt.Sprintf(`{"name":"created %d","price_cents":%d,"stock":%d}`, round, 500+round, round)
		r := p.do(t, "POST", "/items", bearer, []byte(body))
		created := decodeJSON[upItem](t, r)
		if r.status != http.StatusCreated || r.header.Get("Location") != path || created.ID != id || created.Version != 1 ||
			r.header.Get("ETag") != `"1"` || created.Name != fmt.Sprintf("created %d", round) {
			t.Fatalf("POST /items %s = %d %s Location %q ETag %q, want 201, item %d at version 1, Location %s",
				body, r.status, r.body, r.header.Get("Location"), r.header.Get("ETag"), id, path)
		}
		readsShow(t, p, bearer, path, "POST "+body, created, 100)
	}
	p.stop(t)
}

// TestUpItemWritesRefused drives each refused item write through the
// balancer: its status, its JSON error, and that nothing was written (the
// item reads back as before, with the same ETag; a refused create creates
// no id).
func TestUpItemWritesRefused(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token
	const path = "/items/77"
	read := func(t *testing.T) (upItem, string) {
		t.Helper()
		r := p.do(t, "GET", path, bearer, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		return decodeJSON[upItem](t, r), r.header.Get("ETag")
	}
	// One write first, so that the item is at version 2 and "1" is stale.
	if r := p.doWith(t, "PATCH", path, bearer, []byte(`{"stock":5}`), mergePatch); r.status != http.StatusOK {
		t.Fatalf("PATCH %s = %d %s", path, r.status, r.body)
	}
	before, tag := read(t)
	if before.Version != 2 || tag != `"2"` {
		t.Fatalf("GET %s after one write = %+v ETag %q, want version 2", path, before, tag)
	}
	ifMatch := func(tag string, h map[string]string) map[string]string {
		out := map[string]string{"If-Match": tag}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	const whole = `{"name":"x","price_cents":1,"stock":1}`

	tests := []struct {
		name, method, path, body string
		header                   map[string]string
		wantStatus               int
		wantCode                 string
	}{
		{"PUT without stock", "PUT", path, `{"name":"x","price_cents":1}`, nil, 400, "invalid"},
		{"PUT with only a name", "PUT", path, `{"name":"x"}`, nil, 400, "invalid"},
		{"PUT with a null price", "PUT", path, `{"name":"x","price_cents":null,"stock":1}`, nil, 400, "invalid"},
		{"PUT negative stock", "PUT", path, `{"name":"x","price_cents":1,"stock":-1}`, nil, 400, "invalid"},
		{"POST without price", "POST", "/items", `{"name":"x","stock":1}`, nil, 400, "invalid"},
		{"POST with a null name", "POST", "/items", `{"name":null,"price_cents":1,"stock":1}`, nil, 400, "invalid"},
		{"POST with an id", "POST", "/items", `{"id":5,"name":"x","price_cents":1,"stock":1}`, nil, 400, "invalid"},
		{"POST with a bad Idempotency-Key", "POST", "/items", whole, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, 400, "invalid"},
		{"PATCH as JSON", "PATCH", path, `{"stock":1}`, nil, 415, "not_acceptable"},
		{"PATCH null stock", "PATCH", path, `{"stock":null}`, mergePatch, 400, "invalid"},
		{"PATCH unknown member", "PATCH", path, `{"colour":"red"}`, mergePatch, 400, "invalid"},
		{"PATCH array", "PATCH", path, `[{"stock":1}]`, mergePatch, 400, "invalid"},
		{"PATCH null", "PATCH", path, `null`, mergePatch, 400, "invalid"},
		{"PATCH empty name", "PATCH", path, `{"name":""}`, mergePatch, 400, "invalid"},
		{"PUT stale If-Match", "PUT", path, whole, ifMatch(`"1"`, nil), 412, "precondition_failed"},
		{"PATCH stale If-Match", "PATCH", path, `{"stock":1}`, ifMatch(`"1"`, mergePatch), 412, "precondition_failed"},
		{"DELETE stale If-Match", "DELETE", path, "", ifMatch(`"1"`, nil), 412, "precondition_failed"},
		{"PUT malformed If-Match", "PUT", path, whole, ifMatch("2", nil), 412, "precondition_failed"},
		{"PATCH weak If-Match", "PATCH", path, `{"stock":1}`, ifMatch(`W/"2"`, mergePatch), 412, "precondition_failed"},
		{"POST on an item", "POST", path, whole, nil, 405, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			r := p.doWith(t, tt.method, tt.path, bearer, body, tt.header)
			if r.status != tt.wantStatus {
				t.Errorf("%s %s %s = %d %s, want %d", tt.method, tt.path, tt.body, r.status, r.body, tt.wantStatus)
			}
			e := decodeJSON[struct {
				Error struct{ Code, Message string }
			}](t, r)
			if e.Error.Code != tt.wantCode || e.Error.Message == "" {
				t.Errorf("body = %s, want a JSON error with code %q", r.body, tt.wantCode)
			}
			after, afterTag := read(t)
			if diff := cmp.Diff(before, after); diff != "" || afterTag != tag {
				t.Errorf("%s %s wrote: ETag %q → %q, item (-before +after):\n%s", tt.method, tt.path, tag, afterTag, diff)
			}
		})
	}
	// No refused POST created an item: the next one gets the first new id.
	r := p.do(t, "POST", "/items", bearer, []byte(whole))
	if got := decodeJSON[upItem](t, r); r.status != http.StatusCreated || got.ID != dbsvc.SeedItems+1 {
		t.Errorf("POST /items after the refused ones = %d %s, want 201 with id %d", r.status, r.body, dbsvc.SeedItems+1)
	}
	// And the current tag does write.
	if r := p.doWith(t, "DELETE", path, bearer, nil, ifMatch(tag, nil)); r.status != http.StatusNoContent {
		t.Errorf("DELETE %s with If-Match %s = %d %s, want 204", path, tag, r.status, r.body)
	}
	p.stop(t)
}

// TestUpItemCreateIdempotencyKey: POST /items with an Idempotency-Key
// through the balancer (which may retry such a POST on another gateway):
// the same key and body twice make one item, the second answer replayed;
// the key with another body is a 409 that writes nothing.
func TestUpItemCreateIdempotencyKey(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token
	key := map[string]string{"Idempotency-Key": "e2e-create-1"}
	const body = `{"name":"Once","price_cents":990,"stock":3}`
	const path = "/items/1001" // the first new id: dbsvc.SeedItems+1

	var first upItem
	for i, want := range []string{"", "true"} {
		r := p.doWith(t, "POST", "/items", bearer, []byte(body), key)
		got := decodeJSON[upItem](t, r)
		if r.status != http.StatusCreated || got.ID != dbsvc.SeedItems+1 || r.header.Get("Location") != path ||
			r.header.Get("ETag") != `"1"` || r.header.Get("Idempotent-Replayed") != want {
			t.Fatalf("POST /items with a key, %d: %d %s Location %q ETag %q Idempotent-Replayed %q (from %s); want 201, item %d, ETag \"1\", Idempotent-Replayed %q",
				i+1, r.status, r.body, r.header.Get("Location"), r.header.Get("ETag"), r.header.Get("Idempotent-Replayed"), r.servedBy, dbsvc.SeedItems+1, want)
		}
		if i == 0 {
			first = got
		} else if got != first {
			t.Errorf("the repeat answered %+v, want the first create's %+v", got, first)
		}
	}
	readsShow(t, p, bearer, path, "two keyed POSTs", first, 4)

	r := p.doWith(t, "POST", "/items", bearer, []byte(`{"name":"Twice","price_cents":990,"stock":3}`), key)
	e := decodeJSON[struct {
		Error struct{ Code, Message string }
	}](t, r)
	if r.status != http.StatusConflict || e.Error.Code != "conflict" || !strings.Contains(e.Error.Message, "Idempotency-Key") {
		t.Errorf("the key with another body = %d %s, want 409 conflict naming Idempotency-Key", r.status, r.body)
	}
	readsShow(t, p, bearer, path, "the refused POST", first, 4)
	// Nothing was created by the repeat nor the refusal: the next id follows.
	r = p.do(t, "POST", "/items", bearer, []byte(body))
	if got := decodeJSON[upItem](t, r); r.status != http.StatusCreated || got.ID != dbsvc.SeedItems+2 || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("POST /items without a key after them = %d %s, want 201 with id %d, not replayed", r.status, r.body, dbsvc.SeedItems+2)
	}
	p.stop(t)
}
