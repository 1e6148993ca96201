package task

import (
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string // task type; "" means an error wrapping ErrInvalid
	}{
		{"report", `{"task":"report"}`, "report"},
		{"noop", `{"task":"noop"}`, "noop"},
		{"sleep", `{"task":"sleep","duration_ms":250}`, "sleep"},
		{"sleep without duration", `{"task":"sleep"}`, "sleep"},
		{"sleep zero", `{"task":"sleep","duration_ms":0}`, "sleep"},
		{"sleep max", `{"task":"sleep","duration_ms":600000}`, "sleep"},
		{"extra members are payload", `{"task":"report","note":"x"}`, "report"},
		{"surrounding whitespace", " \n{\"task\":\"noop\"}\n ", "noop"},
		{"missing task", `{}`, ""},
		{"missing task, other members", `{"type":"report"}`, ""},
		{"empty task", `{"task":""}`, ""},
		{"null task", `{"task":null}`, ""},
		{"task not a string", `{"task":1}`, ""},
		{"task an object", `{"task":{"name":"report"}}`, ""},
		{"unknown type", `{"task":"rm -rf"}`, ""},
		{"type with different case", `{"task":"Report"}`, ""},
		{"type with space", `{"task":"report "}`, ""},
		{"long unknown type", `{"task":"` + strings.Repeat("x", 1000) + `"}`, ""},
		{"non-object number", `42`, ""},
		{"non-object string", `"report"`, ""},
		{"array", `[{"task":"report"}]`, ""},
		{"null", `null`, ""},
		{"empty body", ``, ""},
		{"malformed", `{"task":"report"`, ""},
		{"trailing garbage", `{"task":"report"} x`, ""},
		{"sleep negative", `{"task":"sleep","duration_ms":-1}`, ""},
		{"sleep too big", `{"task":"sleep","duration_ms":600001}`, ""},
		{"sleep beyond int64", `{"task":"sleep","duration_ms":1e30}`, ""},
		{"sleep duration a string", `{"task":"sleep","duration_ms":"5"}`, ""},
		{"sleep duration a float", `{"task":"sleep","duration_ms":1.5}`, ""},
		{"sleep duration null is zero", `{"task":"sleep","duration_ms":null}`, "sleep"},
		{"oversize body", `{"task":"report","pad":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Validate([]byte(tt.body))
			if tt.want == "" {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("Validate(%.60q) = %q, %v, want an error wrapping %v", tt.body, got, err, ErrInvalid)
				}
				if got != "" {
					t.Errorf("Validate(%.60q) type = %q, want \"\" on error", tt.body, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Validate(%.60q) = %q, %v, want %q, nil", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestValidateOversizeBoundary(t *testing.T) {
	t.Parallel()
	prefix, suffix := `{"task":"noop","pad":"`, `"}`
	pad := MaxPayloadBytes - len(prefix) - len(suffix)
	atLimit := prefix + strings.Repeat("x", pad) + suffix
	if got, err := Validate([]byte(atLimit)); err != nil || got != "noop" {
		t.Errorf("Validate(%d bytes) = %q, %v, want \"noop\", nil", len(atLimit), got, err)
	}
	over := prefix + strings.Repeat("x", pad+1) + suffix
	if _, err := Validate([]byte(over)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate(%d bytes) = %v, want an error wrapping %v", len(over), err, ErrInvalid)
	}
}

func TestDecodeSleep(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want time.Duration
		ok   bool
	}{
		{"zero", `{"duration_ms":0}`, 0, true},
		{"missing", `{}`, 0, true},
		{"250ms", `{"task":"sleep","duration_ms":250}`, 250 * time.Millisecond, true},
		{"max", `{"duration_ms":600000}`, MaxSleep, true},
		{"one over max", `{"duration_ms":600001}`, 0, false},
		{"negative", `{"duration_ms":-5}`, 0, false},
		{"max int64 (would wrap to -1ms)", `{"duration_ms":9223372036854775807}`, 0, false},
		{"min int64", `{"duration_ms":-9223372036854775808}`, 0, false},
		{"beyond int64", `{"duration_ms":99999999999999999999}`, 0, false},
		{"overflow (would wrap to 64ns)", `{"duration_ms":76480200929599801}`, 0, false},
		{"overflow (would wrap to 64us)", `{"duration_ms":99151249396188840}`, 0, false},
		{"string", `{"duration_ms":"100"}`, 0, false},
		{"float", `{"duration_ms":0.5}`, 0, false},
		{"bool", `{"duration_ms":true}`, 0, false},
		{"array", `[1]`, 0, false},
		{"malformed", `{"duration_ms":`, 0, false},
		{"empty", ``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeSleep([]byte(tt.body))
			if !tt.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("DecodeSleep(%q) = %v, %v, want an error wrapping %v", tt.body, got, err, ErrInvalid)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("DecodeSleep(%q) = %v, %v, want %v, nil", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestValidateSleepOverflow(t *testing.T) {
	t.Parallel()
	for _, ms := range []string{"9223372036854775807", "76480200929599801", "99151249396188840"} {
		body := `{"task":"sleep","duration_ms":` + ms + `}`
		if got, err := Validate([]byte(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate(%q) = %q, %v, want an error wrapping %v", body, got, err, ErrInvalid)
		}
	}
}

// TestNewID: ids are 16 random bytes in hex, valid ids, and do not repeat.
func TestNewID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		b, err := hex.DecodeString(id)
		if err != nil || len(b) != IDBytes || !ValidID(id) || strings.ToLower(id) != id {
			t.Fatalf("NewID() = %q: want %d bytes in lowercase hex, a valid id (decode error %v)", id, IDBytes, err)
		}
		if seen[id] {
			t.Fatalf("NewID() gave %q twice", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"Z", true},
		{"0", true},
		{"01J8ZK3QH6Y2W4X5V7T9R0S1P2", true},
		{"abcXYZ0123456789", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{".", false},
		{"*", false},
		{">", false},
		{"a.b", false},
		{"a*", false},
		{"a>", false},
		{"../x", false},
		{"a/b", false},
		{"a-b", false},
		{"a_b", false},
		{"a b", false},
		{" a", false},
		{"a\n", false},
		{"abc\x00", false},
		{"é", false},
		{"ａ", false}, // fullwidth a
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			t.Parallel()
			if got := ValidID(tt.id); got != tt.want {
				t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	for _, typ := range Types {
		if got, want := Subject(typ), "tasks."+typ; got != want {
			t.Errorf("Subject(%q) = %q, want %q", typ, got, want)
		}
	}
	if !slices.IsSorted(Types) {
		t.Errorf("Types = %v, want sorted", Types)
	}
}

func TestStateTerminal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    State
		want bool
	}{
		{Queued, false},
		{Running, false},
		{Succeeded, true},
		{Failed, true},
		{Dead, true},
		{Cancelled, true},
		{State("bogus"), false},
	}
	for _, tt := range tests {
		t.Run(string(tt.s), func(t *testing.T) {
			t.Parallel()
			if got := tt.s.Terminal(); got != tt.want {
				t.Errorf("State(%q).Terminal() = %v, want %v", tt.s, got, tt.want)
			}
		})
	}
}
