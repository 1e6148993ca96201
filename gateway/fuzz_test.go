package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/strictjson"
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
