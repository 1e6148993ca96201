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
// ErrInvalid, and that what it accepts is a shipped type whose payload is in
// bounds, stored in a canonical form that Parse and DecodeSleep read as they
// read the body.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{"task":"report"}`,
		`{"task":"noop"}`,
		`{"task":"sleep","duration_ms":100}`,
		`{"task":"sleep","duration_ms":-1}`,
		`{"task":"unknown"}`,
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
		if !slices.Contains(Types, typ) {
			t.Errorf("Validate(%q) = %q, nil, want one of %v", body, typ, Types)
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
		if typ != "sleep" {
			return
		}
		d1, err1 := DecodeSleep(body)
		if d2, err2 := DecodeSleep(sub.Payload); d1 != d2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("DecodeSleep: body %q gives %v, %v; its payload %s gives %v, %v", body, d1, err1, sub.Payload, d2, err2)
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
				t.Errorf("Validate(%q) accepted duration_ms %s, want it in [0, %d]", body, raw.DurationMS, MaxSleep.Milliseconds())
			}
		}
		d, err := DecodeSleep(body)
		if err != nil || d < 0 || d > MaxSleep {
			t.Errorf("DecodeSleep(%q) = %v, %v after Validate accepted it, want a duration in [0, %v]", body, d, err, MaxSleep)
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
