package dbsvc

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/wire"
)

// TestRequestsReadStrictly: dbsvc reads its NATS requests with the one
// strict reader (decodeBody), so a duplicate key, a key of another case or
// a number out of range is refused with a message naming the field, and
// nothing is written: the item is as it was.
func TestRequestsReadStrictly(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()
	before, err := db.client.Item(ctx, "req-before", 7)
	if err != nil {
		t.Fatalf("Item(7) = %v", err)
	}
	tests := []struct {
		name, subject, body, wantMsg string
	}{
		{"duplicate id", wire.DBItemUpdate, `{"id":8,"id":7,"name":"x","price_cents":1,"stock":1}`, `duplicate key "id"`},
		{"duplicate name", wire.DBItemUpdate, `{"id":7,"name":"x","name":"y","price_cents":1,"stock":1}`, `duplicate key "name"`},
		{"wrong-case key", wire.DBItemUpdate, `{"id":7,"Name":"x","price_cents":1,"stock":1}`, `unknown field "Name" (keys are case-sensitive: the field is "name")`},
		{"out of range", wire.DBItemUpdate, `{"id":7,"name":"x","price_cents":9223372036854775808,"stock":1}`, `field "price_cents" must be an integer in range, not number 9223372036854775808`},
		{"duplicate scopes", wire.DBUserPut, `{"name":"eve","password_hash":"x","scopes":[],"scopes":["items:write"]}`, `duplicate key "scopes"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := nc.RequestWithContext(ctx, tt.subject, []byte(tt.body))
			if err != nil {
				t.Fatalf("Request(%s) = %v", tt.subject, err)
			}
			code, desc := msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
			if code != string(apperr.Invalid) || !strings.HasPrefix(desc, tt.wantMsg) {
				t.Errorf("Request(%s, %s) = %q %q, want %q with a message starting %q", tt.subject, tt.body, code, desc, apperr.Invalid, tt.wantMsg)
			}
		})
	}
	after, err := db.client.Item(ctx, "req-after", 7)
	if diff := cmp.Diff(before, after); err != nil || diff != "" {
		t.Errorf("Item(7) after refused updates = %v, changed (-before +after):\n%s", err, diff)
	}
	if _, err := db.client.GetUser(ctx, "req-user", "eve"); !errors.Is(err, ErrNotFound) {
		t.Errorf("User(eve) after a refused put = %v, want ErrNotFound", err)
	}
}
