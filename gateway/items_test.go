package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// mergePatch is the header of a PATCH body.
var mergePatch = map[string]string{"Content-Type": mergePatchType}

// withIfMatch returns header with If-Match: tag added.
func withIfMatch(header map[string]string, tag string) map[string]string {
	h := map[string]string{"If-Match": tag}
	for k, v := range header {
		h[k] = v
	}
	return h
}

// TestItemWrites drives the item writes over HTTP on two gateways: create,
// whole replacement, merge patch, conditional writes and their ETags, and
// every refusal, each of which writes nothing.
func TestItemWrites(t *testing.T) {
	t.Parallel()
	st := startStack(t, 2000)
	gwA := startGateway(t, testutil.Connect(t, st.ns))
	gwB := startGateway(t, testutil.Connect(t, st.ns))
	tok := token(t, auth.ScopeItemsRead, auth.ScopeItemsWrite)

	// read returns the item through both gateways (so from their caches,
	// once warm), after checking that they agree and that the ETag is the
	// body's version.
	read := func(t *testing.T, id int64) dbsvc.Item {
		t.Helper()
		var first dbsvc.Item
		for i, base := range []string{gwA, gwB, gwA, gwB} {
			r := get(t, fmt.Sprintf("%s/items/%d", base, id), tok)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s/items/%d = %d %s, want 200", base, id, r.status, r.body)
			}
			it := itemBody(t, r)
			if tag := r.header.Get("ETag"); tag != etag(it.Version) {
				t.Errorf("GET %s/items/%d (X-Cache %s) ETag = %q, want %q (version %d)", base, id, r.header.Get("X-Cache"), tag, etag(it.Version), it.Version)
			}
			if i == 0 {
				first = it
			} else if diff := cmp.Diff(first, it); diff != "" {
				t.Fatalf("GET %s/items/%d differs from the first read (-first +this):\n%s", base, id, diff)
			}
		}
		return first
	}
	// refused checks a refusal's status, JSON error code and message.
	refused := func(t *testing.T, what string, r result, status int, code, inMessage string) {
		t.Helper()
		var e struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(r.body, &e); err != nil {
			t.Fatalf("%s: error body %q is not JSON: %v", what, r.body, err)
		}
		if r.status != status || e.Error.Code != code || !strings.Contains(e.Error.Message, inMessage) {
			t.Errorf("%s = %d %s, want %d %s with a message naming %q", what, r.status, r.body, status, code, inMessage)
		}
	}

	t.Run("create", func(t *testing.T) {
		r := send(t, http.MethodPost, gwA+"/items", tok, `{"name":"Brand New","price_cents":1250,"stock":4}`, nil)
		if r.status != http.StatusCreated {
			t.Fatalf("POST /items = %d %s, want 201", r.status, r.body)
		}
		it := itemBody(t, r)
		if loc := r.header.Get("Location"); loc != fmt.Sprintf("/items/%d", it.ID) || it.ID <= dbsvc.SeedItems {
			t.Errorf("POST /items Location = %q for item %d, want /items/<the new id>", loc, it.ID)
		}
		if tag := r.header.Get("ETag"); tag != `"1"` || it.Version != 1 || it.Name != "Brand New" || it.PriceCents != 1250 || it.Stock != 4 {
			t.Errorf("POST /items = ETag %q, %+v; want ETag \"1\" and the item at version 1", tag, it)
		}
		if diff := cmp.Diff(it, read(t, it.ID)); diff != "" {
			t.Errorf("GET the created item (-created +read):\n%s", diff)
		}
		for _, b := range []struct{ body, inMessage string }{
			{`{"name":"x"}`, "price_cents, stock"},
			{`{"name":"x","price_cents":1,"stock":null}`, "stock"},
			{`{"name":"x","price_cents":-1,"stock":1}`, "price_cents must be >= 0"},
			{`{"name":"x","price_cents":1,"stock":1,"id":7}`, "id"},
			{`[]`, "object"},
		} {
			r := send(t, http.MethodPost, gwA+"/items", tok, b.body, nil)
			refused(t, "POST /items "+b.body, r, http.StatusBadRequest, "invalid", b.inMessage)
		}
		// Nothing was created by the refusals: the next id follows it.
		r = send(t, http.MethodPost, gwB+"/items", tok, `{"name":"Next","price_cents":1,"stock":1}`, nil)
		if next := itemBody(t, r); r.status != http.StatusCreated || next.ID != it.ID+1 {
			t.Errorf("POST /items after the refusals = %d, id %d; want 201, id %d", r.status, next.ID, it.ID+1)
		}
	})

	t.Run("put is a whole replacement", func(t *testing.T) {
		before := read(t, 30)
		for _, b := range []struct{ body, inMessage string }{
			{`{"name":"x"}`, "missing (or null) required fields price_cents, stock"},
			{`{"price_cents":1,"stock":1}`, "field name"},
			{`{"name":"x","price_cents":null,"stock":1}`, "price_cents"},
			{`{}`, "name, price_cents, stock"},
		} {
			r := send(t, http.MethodPut, gwA+"/items/30", tok, b.body, nil)
			refused(t, "PUT /items/30 "+b.body, r, http.StatusBadRequest, "invalid", b.inMessage)
		}
		if diff := cmp.Diff(before, read(t, 30)); diff != "" {
			t.Errorf("item 30 after refused partial PUTs (-before +after):\n%s", diff)
		}
		r := send(t, http.MethodPut, gwA+"/items/30", tok, `{"name":"whole","price_cents":5,"stock":6}`, nil)
		if it := itemBody(t, r); r.status != http.StatusOK || r.header.Get("ETag") != etag(before.Version+1) || it.Version != before.Version+1 {
			t.Errorf("PUT /items/30 = %d ETag %q %s, want 200 at version %d", r.status, r.header.Get("ETag"), r.body, before.Version+1)
		}
	})

	t.Run("patch", func(t *testing.T) {
		before := read(t, 31)
		r := send(t, http.MethodPatch, gwA+"/items/31", tok, `{"stock":77}`, mergePatch)
		want := before
		want.Stock, want.Version = 77, before.Version+1
		got := itemBody(t, r)
		want.UpdatedAt = got.UpdatedAt
		if diff := cmp.Diff(want, got); r.status != http.StatusOK || diff != "" || r.header.Get("ETag") != etag(want.Version) {
			t.Fatalf("PATCH /items/31 {\"stock\":77} = %d ETag %q, mismatch (-want +got):\n%s", r.status, r.header.Get("ETag"), diff)
		}
		// Read your writes, on both gateways.
		if diff := cmp.Diff(got, read(t, 31)); diff != "" {
			t.Errorf("GET /items/31 after PATCH (-patched +read):\n%s", diff)
		}
		// The charset parameter is allowed.
		r = send(t, http.MethodPatch, gwB+"/items/31", tok, `{"name":"patched","price_cents":9}`,
			map[string]string{"Content-Type": mergePatchType + "; charset=utf-8"})
		if it := itemBody(t, r); r.status != http.StatusOK || it.Name != "patched" || it.PriceCents != 9 || it.Stock != 77 {
			t.Errorf("PATCH /items/31 name and price = %d %s, want both set and the stock kept", r.status, r.body)
		}
		after := read(t, 31)

		for _, b := range []struct {
			name, body string
			header     map[string]string
			status     int
			code       string
			inMessage  string
		}{
			{"json content type", `{"stock":1}`, map[string]string{"Content-Type": "application/json"}, 415, "not_acceptable", mergePatchType},
			{"no content type", `{"stock":1}`, nil, 415, "not_acceptable", mergePatchType},
			{"null field", `{"stock":null}`, mergePatch, 400, "invalid", `null removes a field in a merge patch, and an item's fields are all required: "stock"`},
			{"null fields", `{"name":null,"stock":1,"price_cents":null}`, mergePatch, 400, "invalid", `"name", "price_cents"`},
			{"unknown member", `{"colour":"red"}`, mergePatch, 400, "invalid", "colour"},
			{"array", `[{"stock":1}]`, mergePatch, 400, "invalid", "JSON object"},
			{"string", `"stock"`, mergePatch, 400, "invalid", "JSON object"},
			{"null", `null`, mergePatch, 400, "invalid", "JSON object"},
			{"number", `5`, mergePatch, 400, "invalid", "JSON object"},
			{"wrong type", `{"stock":"5"}`, mergePatch, 400, "invalid", "stock"},
			{"negative stock", `{"stock":-5}`, mergePatch, 400, "invalid", "stock must be >= 0"},
			{"empty name", `{"name":""}`, mergePatch, 400, "invalid", "name must not be empty"},
			{"not json", `{"stock":`, mergePatch, 400, "invalid", "JSON"},
			{"trailing data", `{"stock":1} {}`, mergePatch, 400, "invalid", "one JSON value"},
		} {
			r := send(t, http.MethodPatch, gwA+"/items/31", tok, b.body, b.header)
			refused(t, "PATCH /items/31 "+b.name, r, b.status, b.code, b.inMessage)
			if b.status == http.StatusUnsupportedMediaType && r.header.Get("Accept-Patch") != mergePatchType {
				t.Errorf("PATCH /items/31 %s: Accept-Patch = %q, want %q", b.name, r.header.Get("Accept-Patch"), mergePatchType)
			}
		}
		if diff := cmp.Diff(after, read(t, 31)); diff != "" {
			t.Errorf("item 31 after refused patches (-before +after):\n%s", diff)
		}
		if r := send(t, http.MethodPatch, gwA+"/items/99999", tok, `{"stock":1}`, mergePatch); r.status != http.StatusNotFound {
			t.Errorf("PATCH /items/99999 = %d %s, want 404", r.status, r.body)
		}
	})

	t.Run("if-match", func(t *testing.T) {
		cur := read(t, 32)
		tag := etag(cur.Version)
		staleTag := etag(cur.Version - 1)
		if cur.Version == 1 {
			staleTag = `"7"`
		}
		for _, c := range []struct {
			name, method, body, ifMatch string
			header                      map[string]string
		}{
			{"stale PUT", http.MethodPut, `{"name":"lost","price_cents":1,"stock":1}`, staleTag, nil},
			{"stale PATCH", http.MethodPatch, `{"stock":1}`, staleTag, mergePatch},
			{"stale DELETE", http.MethodDelete, "", staleTag, nil},
			{"weak tag", http.MethodPatch, `{"stock":1}`, "W/" + tag, mergePatch},
			{"unquoted tag", http.MethodPatch, `{"stock":1}`, strings.Trim(tag, `"`), mergePatch},
			{"not a version", http.MethodPut, `{"name":"lost","price_cents":1,"stock":1}`, `"abc"`, nil},
			{"a list of stale tags", http.MethodDelete, "", `"0", ` + staleTag, nil},
		} {
			r := send(t, c.method, gwB+"/items/32", tok, c.body, withIfMatch(c.header, c.ifMatch))
			refused(t, fmt.Sprintf("%s /items/32 with If-Match %s (%s)", c.method, c.ifMatch, c.name), r,
				http.StatusPreconditionFailed, "precondition_failed", "nothing was written")
		}
		if diff := cmp.Diff(cur, read(t, 32)); diff != "" {
			t.Fatalf("item 32 after refused conditional writes (-before +after):\n%s", diff)
		}

		// The current tag, alone or in a list, and * match.
		r := send(t, http.MethodPut, gwA+"/items/32", tok, `{"name":"checked","price_cents":2,"stock":2}`, map[string]string{"If-Match": tag})
		if r.status != http.StatusOK || r.header.Get("ETag") != etag(cur.Version+1) {
			t.Fatalf("PUT /items/32 with If-Match %s = %d %s ETag %q, want 200 with ETag %s", tag, r.status, r.body, r.header.Get("ETag"), etag(cur.Version+1))
		}
		newTag := r.header.Get("ETag")
		r = send(t, http.MethodPatch, gwA+"/items/32", tok, `{"stock":3}`, withIfMatch(mergePatch, `"999", `+newTag))
		if r.status != http.StatusOK || itemBody(t, r).Stock != 3 {
			t.Errorf("PATCH /items/32 with If-Match listing the current tag = %d %s, want 200", r.status, r.body)
		}
		// The tag it replaced no longer matches.
		r = send(t, http.MethodPatch, gwA+"/items/32", tok, `{"stock":4}`, withIfMatch(mergePatch, newTag))
		refused(t, "PATCH /items/32 with the tag of the write before", r, http.StatusPreconditionFailed, "precondition_failed", "")
		r = send(t, http.MethodPatch, gwA+"/items/32", tok, `{"stock":5}`, withIfMatch(mergePatch, "*"))
		if r.status != http.StatusOK || itemBody(t, r).Stock != 5 {
			t.Errorf("PATCH /items/32 with If-Match * = %d %s, want 200", r.status, r.body)
		}
		// A missing item is a 404, whatever If-Match says.
		if r := send(t, http.MethodPut, gwA+"/items/99999", tok, `{"name":"x","price_cents":1,"stock":1}`, map[string]string{"If-Match": `"1"`}); r.status != http.StatusNotFound {
			t.Errorf("PUT /items/99999 with If-Match = %d %s, want 404", r.status, r.body)
		}
		final := read(t, 32)
		if r := send(t, http.MethodDelete, gwB+"/items/32", tok, "", map[string]string{"If-Match": etag(final.Version)}); r.status != http.StatusNoContent {
			t.Errorf("DELETE /items/32 with its current tag = %d %s, want 204", r.status, r.body)
		}
		if r := get(t, gwA+"/items/32", tok); r.status != http.StatusNotFound {
			t.Errorf("GET /items/32 after the conditional delete = %d, want 404", r.status)
		}
	})

	t.Run("scopes", func(t *testing.T) {
		reader := token(t, auth.ScopeItemsRead)
		before := read(t, 33)
		if r := send(t, http.MethodPost, gwA+"/items", reader, `{"name":"x","price_cents":1,"stock":1}`, nil); r.status != http.StatusForbidden {
			t.Errorf("POST /items without items:write = %d, want 403", r.status)
		}
		if r := send(t, http.MethodPatch, gwA+"/items/33", reader, `{"stock":1}`, mergePatch); r.status != http.StatusForbidden {
			t.Errorf("PATCH /items/33 without items:write = %d, want 403", r.status)
		}
		if diff := cmp.Diff(before, read(t, 33)); diff != "" {
			t.Errorf("item 33 after refused writes (-before +after):\n%s", diff)
		}
	})
}

func TestItemETag(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		item string
		want string
	}{
		{`{"id":1,"name":"x","price_cents":1,"stock":1,"version":12,"updated_at":"2026-01-01T00:00:00Z"}`, `"12"`},
		// The key inside a name is escaped, so it is not the member.
		{`{"id":1,"name":"\"version\":99","price_cents":1,"stock":1,"version":3,"updated_at":"x"}`, `"3"`},
		{`{"id":1, "version": 4 }`, `"4"`},
		{`{"id":1,"name":"no version"}`, ""},
		{`{"id":1,"version":"7"}`, ""},
		{`null`, ""},
	} {
		got, ok := itemETag([]byte(tt.item))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("itemETag(%s) = %q, %v; want %q", tt.item, got, ok, tt.want)
		}
	}
	// What it reads is what etag writes for the version dbsvc encodes.
	it := dbsvc.Item{ID: 5, Name: `a "version":1 name`, Version: 987654321, UpdatedAt: time.Now()}
	b, err := json.Marshal(it)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := itemETag(b); got != etag(it.Version) {
		t.Errorf("itemETag(%s) = %q, want %q", b, got, etag(it.Version))
	}
}

func TestTagVersion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		tag  string
		want int64
	}{
		{`"1"`, 1},
		{`"42"`, 42},
		{`W/"42"`, 0},
		{`42`, 0},
		{`"042"`, 0},
		{`"+4"`, 0},
		{`"-4"`, 0},
		{`"0"`, 0},
		{`""`, 0},
		{`"`, 0},
		{`"99999999999999999999"`, 0},
		{`"4 "`, 0},
	} {
		if got := tagVersion(tt.tag); got != tt.want {
			t.Errorf("tagVersion(%s) = %d, want %d", tt.tag, got, tt.want)
		}
	}
}

// FuzzDecodeMergePatch feeds arbitrary bodies to the PATCH /items/{id}
// reader: it never panics, refuses with an invalid error (a 400), and what
// it accepts is one JSON object with only the item's fields, none null,
// each in range, and decoded as they are written.
func FuzzDecodeMergePatch(f *testing.F) {
	for _, seed := range []string{`{"stock":3}`, `{"name":"x","price_cents":1}`, `{}`, `{"stock":null}`, `null`, `[{}]`, `{"colour":1}`, `{"stock":-1}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeMergePatch(strings.NewReader(string(body)))
		if err != nil {
			if apperr.CodeOf(err) != apperr.Invalid {
				t.Fatalf("decodeMergePatch(%q) = %v, want an invalid error", body, err)
			}
			return
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(body, &members); err != nil || members == nil {
			t.Fatalf("decodeMergePatch accepted %q, which is not one JSON object: %v", body, err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decodeMergePatch(%q) = %+v, which fails Validate: %v", body, p, err)
		}
		for k, v := range members {
			if string(v) == "null" {
				t.Fatalf("decodeMergePatch accepted %q with %q null", body, k)
			}
			var field any
			switch strings.ToLower(k) { // encoding/json matches names case-insensitively
			case "name":
				field = p.Name
			case "price_cents":
				field = p.PriceCents
			case "stock":
				field = p.Stock
			default:
				t.Fatalf("decodeMergePatch accepted %q with the unknown member %q", body, k)
			}
			if field == nil || reflect.ValueOf(field).IsNil() {
				t.Fatalf("decodeMergePatch(%q) = %+v, which lost the member %q", body, p, k)
			}
		}
	})
}
