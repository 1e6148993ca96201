package task

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"testing"
)

// FuzzValidate checks that Validate never panics, that every error wraps
// ErrInvalid, and that what it accepts is stored in a canonical form that
// Parse reads as it read the body; then that resolving it against the
// built-in types (their schemas) never panics, refuses with ErrInvalid
// only, and accepts a sleep task only with duration_ms in bounds, which
// DecodeSleep, the worker's reader, reads within them.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{"task":"report"}`,
		`{"task":"noop"}`,
		`{"task":"sleep","duration_ms":100}`,
		`{"task":"sleep","duration_ms":-1}`,
		`{"task":"sleep","duration_ms":1e30}`,
		`{"task":"sleep","duration_ms":600000.0}`,
		`{"task":"unknown"}`,
		`{"task":"noop","queue":"critical"}`,
		`{"task":"noop","queue":"nope"}`,
		`[]`,
		`null`,
		`{"task":1}`,
		``,
		`{"task":"noop","task":"sleep"}`,
		`{"Task":"noop"}`,
		`{"task":"sleep","Duration_ms":5}`,
		`{"task":"report","note":{"b":1,"a":[1, 2]}, "delay":"5s"}`,
	} {
		f.Add([]byte(s))
	}
	cat := builtinCatalog()
	f.Fuzz(func(t *testing.T, body []byte) {
		typ, err := Validate(body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate(%q) = %v, want an error wrapping %v", body, err, ErrInvalid)
			}
			if typ != "" {
				t.Errorf("Validate(%q) = %q, %v, want \"\" with an error", body, typ, err)
			}
			return
		}
		if typ == "" {
			t.Errorf("Validate(%q) = \"\", nil, want a type", body)
		}
		if len(body) > MaxPayloadBytes {
			t.Errorf("Validate(%d bytes) = nil error, want over-size refused", len(body))
		}
		if !json.Valid(body) {
			t.Errorf("Validate(%q) = %q, nil, want malformed JSON refused", body, typ)
		}
		// The payload stored is canonical and reads as the body did: the
		// worker reads exactly what was validated.
		sub, err := Parse(body)
		if err != nil || sub.Type != typ {
			t.Fatalf("Parse(%q) = %+v, %v after Validate accepted it as %q", body, sub, err, typ)
		}
		again, err := Parse(sub.Payload)
		if err != nil || again.Type != typ || !bytes.Equal(again.Payload, sub.Payload) || !reflect.DeepEqual(again.runAt, sub.runAt) || !reflect.DeepEqual(again.delay, sub.delay) {
			t.Fatalf("Parse(payload %s of %q) = %+v, %v, want the same submission", sub.Payload, body, again, err)
		}
		r, err := cat.Resolve(t.Context(), sub)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Resolve(%q) = %v, want an error wrapping %v", body, err, ErrInvalid)
			}
			return
		}
		if !slices.Contains([]string{"noop", "report", "sleep", "tally"}, r.Type.Name) || !slices.Contains(BuiltinQueues, r.Queue) {
			t.Errorf("Resolve(%q) = type %q, queue %q, want a built-in type and queue", body, r.Type.Name, r.Queue)
		}
		if typ != "sleep" {
			return
		}
		// Check the bound on the number as written, not on the converted
		// duration, which could have overflowed.
		var raw struct {
			DurationMS json.Number `json:"duration_ms"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&raw); err == nil && raw.DurationMS != "" {
			n, ok := new(big.Float).SetString(string(raw.DurationMS))
			if ok && (n.Sign() < 0 || n.Cmp(big.NewFloat(float64(MaxSleep.Milliseconds()))) > 0) {
				t.Errorf("Resolve(%q) accepted duration_ms %s, want it in [0, %d]", body, raw.DurationMS, MaxSleep.Milliseconds())
			}
		}
		// A sleep task the gateway accepts, the worker can run: DecodeSleep
		// refuses only a member whose name differs from duration_ms in
		// case, which the schema does not see.
		if d, err := DecodeSleep(sub.Payload); err == nil && (d < 0 || d > MaxSleep) {
			t.Errorf("DecodeSleep(%q) = %v after Resolve accepted it, want a duration in [0, %v]", body, d, MaxSleep)
		}
	})
}

// FuzzValidID checks that an accepted id is 1-64 ASCII letters and digits,
// so it can never smuggle a wildcard, a dot or a path separator.
func FuzzValidID(f *testing.F) {
	for _, s := range []string{"abc123", "a.b", "*", ">", "../x", "", "01J8ZK3QH6Y2W4X5V7T9R0S1P2", NewID()} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		if len(id) < 1 || len(id) > 64 {
			t.Errorf("ValidID(%q) = true, want false for length %d", id, len(id))
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				t.Errorf("ValidID(%q) = true, want false: byte %q at %d", id, c, i)
			}
		}
	})
}
