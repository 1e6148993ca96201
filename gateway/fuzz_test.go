package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/task"
)

// FuzzDecodeStrict feeds arbitrary bodies to the strict decoder of the
// fixed-schema routes (PUT /items/{id}, POST /auth/token): it never panics,
// refuses with an invalid error (a 400), and what it accepts is one JSON
// object with only the schema's fields.
func FuzzDecodeStrict(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		u, err := strictjson.DecodeBody[dbsvc.ItemFields](strings.NewReader(string(body)))
		if err != nil {
			if apperr.CodeOf(err) != apperr.Invalid {
				t.Fatalf("DecodeBody(%q) = %v, want an invalid error", body, err)
			}
			return
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("DecodeBody accepted %q, which is not one JSON object: %v", body, err)
		}
		for k := range fields {
			switch k { // keys match exactly: the strict reader is case-sensitive
			case "name", "price_cents", "stock":
			default:
				t.Fatalf("DecodeBody accepted %q with the unknown field %q", body, k)
			}
		}
		_ = u.Validate() // must not panic whatever was decoded
	})
}

// FuzzCursor feeds arbitrary strings to GET /tasks's cursor reader: it
// never panics, refuses with an invalid error (a 400), and a cursor it
// made reads back as the same position, only with the same filters.
func FuzzCursor(f *testing.F) {
	f.Add("", "alice", int64(1765000000000000000), "0123456789abcdef0123456789abcdef")
	f.Add("AQ", "", int64(-1), "x")
	f.Fuzz(func(t *testing.T, raw, owner string, created int64, id string) {
		filter := listFilter{owner: owner}
		if at, err := decodeCursor(raw, filter); err != nil {
			if apperr.CodeOf(err) != apperr.Invalid {
				t.Fatalf("decodeCursor(%q) = %v, want an invalid error", raw, err)
			}
		} else if !task.ValidID(at.id) {
			t.Fatalf("decodeCursor(%q) accepted the id %q", raw, at.id)
		}
		if !task.ValidID(id) {
			return
		}
		c := encodeCursor(&indexEntry{created: created, id: id}, filter)
		at, err := decodeCursor(c, filter)
		if err != nil || at.created != created || at.id != id {
			t.Fatalf("cursor of (%d, %q) read back as %+v, %v", created, id, at, err)
		}
		if _, err := decodeCursor(c, listFilter{owner: owner + "x"}); err == nil {
			t.Fatalf("cursor of owner %q read with owner %q", owner, owner+"x")
		}
	})
}
