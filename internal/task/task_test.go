package task

import (
	"encoding/hex"
	"errors"
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
		// Parse is syntactic: whether the type is registered is
		// Catalog.Resolve's to say (TestCatalogResolve).
		{"unregistered type", `{"task":"rm -rf"}`, "rm -rf"},
		{"type with different case", `{"task":"Report"}`, "Report"},
		{"long type", `{"task":"` + strings.Repeat("x", 1000) + `"}`, strings.Repeat("x", 1000)},
		{"non-object number", `42`, ""},
		{"non-object string", `"report"`, ""},
		{"array", `[{"task":"report"}]`, ""},
		{"null", `null`, ""},
		{"empty body", ``, ""},
		{"malformed", `{"task":"report"`, ""},
		{"trailing garbage", `{"task":"report"} x`, ""},
		// The sleep type's bounds are its schema's (TestCatalogResolve).
		{"sleep out of bounds is the schema's", `{"task":"sleep","duration_ms":-1}`, "sleep"},
		{"queue", `{"task":"noop","queue":"critical"}`, "noop"},
		{"queue not a name", `{"task":"noop","queue":"a.b"}`, ""},
		{"queue not a string", `{"task":"noop","queue":1}`, ""},
		{"oversize body", `{"task":"report","pad":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`, ""},
		{"duplicate task", `{"task":"noop","task":"sleep"}`, ""},
		{"duplicate payload member", `{"task":"report","note":"a","note":"b"}`, ""},
		{"duplicate key deep in the payload", `{"task":"report","note":{"a":1,"a":2}}`, ""},
		{"duplicate duration", `{"task":"sleep","duration_ms":1,"duration_ms":600001}`, ""},
		{"wrong-case task", `{"Task":"report"}`, ""},
		{"wrong-case task beside task", `{"task":"noop","TASK":"sleep"}`, ""},
		{"wrong-case delay", `{"task":"noop","DELAY":"5s"}`, ""},
		{"payload member whose case differs from another's", `{"task":"report","note":1,"Note":2}`, "report"},
		{"noop does not read duration_ms", `{"task":"noop","Duration_MS":"x"}`, "noop"},
		{"invalid UTF-8", "{\"task\":\"noop\",\"note\":\"\xff\"}", ""},
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

// TestValidateMessages: a refused body's error says what is wrong in
// JSON's terms, naming the field, never a Go type.
func TestValidateMessages(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`[1]`, "invalid: body must be an object, not an array"},
		{`{"task":1}`, `invalid: field "task" must be a string, not a number`},
		{`{"task":"noop","task":"sleep"}`, `invalid: duplicate key "task"`},
		{`{"Task":"noop"}`, `invalid: unknown field "Task" (keys are case-sensitive: the field is "task")`},
		{`{}`, `invalid: "task" is required: the name of a task type (GET /task-types lists them)`},
		{`{"task":"noop"} {}`, "invalid: body must hold one JSON value and nothing after it"},
		{`{"task":`, "invalid: body ends in the middle of its JSON value"},
	}
	for _, tt := range tests {
		_, err := Validate([]byte(tt.body))
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "task: "), tt.want) {
			t.Errorf("Validate(%s) = %v, want an error starting %q", tt.body, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "struct") || strings.Contains(err.Error(), "Go ")) {
			t.Errorf("Validate(%s) = %v, names a Go type", tt.body, err)
		}
	}
}

// TestParsePayload: the payload stored is the body's canonical form, the
// same for bodies that read the same, and what the gateway validated.
func TestParsePayload(t *testing.T) {
	t.Parallel()
	tests := []struct{ body, want string }{
		{`{"task":"noop"}`, `{"task":"noop"}`},
		{` { "task" : "sleep", "duration_ms" : 5 } `, `{"duration_ms":5,"task":"sleep"}`},
		{`{"duration_ms":5,"task":"sleep"}`, `{"duration_ms":5,"task":"sleep"}`},
		{`{"task":"report","note":{"b":"\u00e9","a":[1, 2]}}`, `{"note":{"a":[1,2],"b":"é"},"task":"report"}`},
		{`{"task":"report","id":123456789012345678901234567890}`, `{"id":123456789012345678901234567890,"task":"report"}`},
	}
	for _, tt := range tests {
		s, err := Parse([]byte(tt.body))
		if err != nil || string(s.Payload) != tt.want {
			t.Errorf("Parse(%s) payload = %s, %v, want %s", tt.body, s.Payload, err, tt.want)
			continue
		}
		again, err := Parse(s.Payload)
		if err != nil || string(again.Payload) != tt.want || again.Type != s.Type {
			t.Errorf("Parse(its own payload %s) = %+v, %v, want the same type and payload", s.Payload, again, err)
		}
	}
}

// TestSubmissionRunAt: "run_at" and "delay" are read from the body by the
// strict reader, and bounded.
func TestSubmissionRunAt(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		body string
		want time.Time
		ok   bool
	}{
		{`{"task":"noop"}`, time.Time{}, true},
		{`{"task":"noop","delay":"90s"}`, now.Add(90 * time.Second), true},
		{`{"task":"noop","run_at":"2030-01-02T00:00:00Z"}`, now.Add(24 * time.Hour), true},
		{`{"task":"noop","run_at":"2029-01-01T00:00:00Z"}`, time.Time{}, true},
		{`{"task":"noop","delay":"soon"}`, time.Time{}, false},
		{`{"task":"noop","delay":"-1s"}`, time.Time{}, false},
		{`{"task":"noop","delay":"1s","run_at":"2030-01-02T00:00:00Z"}`, time.Time{}, false},
		{`{"task":"noop","delay":"9000h"}`, time.Time{}, false},
	}
	for _, tt := range tests {
		s, err := Parse([]byte(tt.body))
		if err != nil {
			t.Fatalf("Parse(%s) = %v", tt.body, err)
		}
		got, err := s.RunAt(now)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("RunAt of %s = %v, %v, want %v (ok %v)", tt.body, got, err, tt.want, tt.ok)
		}
	}
	if _, err := Parse([]byte(`{"task":"noop","delay":5}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf(`Parse(delay a number) = %v, want an error wrapping %v`, err, ErrInvalid)
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
		{"duplicate", `{"duration_ms":1,"duration_ms":2}`, 0, false},
		{"wrong case", `{"Duration_ms":5}`, 0, false},
		{"other members are payload", `{"task":"sleep","duration_ms":5,"note":"x"}`, 5 * time.Millisecond, true},
		{"trailing data", `{"duration_ms":5} {}`, 0, false},
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

// TestSleepOverflow: a duration_ms that would overflow time.Duration is
// refused by the sleep type's schema (the gateway) and by DecodeSleep (the
// worker), never wrapped round to a short sleep.
func TestSleepOverflow(t *testing.T) {
	t.Parallel()
	c := builtinCatalog()
	for _, ms := range []string{"9223372036854775807", "76480200929599801", "99151249396188840"} {
		body := `{"task":"sleep","duration_ms":` + ms + `}`
		if _, err := c.Resolve(t.Context(), mustParse(t, body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Resolve(%q) = %v, want an error wrapping %v", body, err, ErrInvalid)
		}
		if d, err := DecodeSleep([]byte(body)); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeSleep(%q) = %v, %v, want an error wrapping %v", body, d, err, ErrInvalid)
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
	for _, typ := range []string{"noop", "report", "sleep"} {
		if got, want := Subject("low", typ), "tasks.low."+typ; got != want {
			t.Errorf("Subject(low, %q) = %q, want %q", typ, got, want)
		}
	}
	tests := []struct {
		subject, queue, typ string
		ok                  bool
	}{
		{"tasks.critical.report", "critical", "report", true},
		{"tasks.report", DefaultQueue, "report", true}, // the layout before queues
		{"tasks.a.b.c", "", "", false},
		{"tasks.", "", "", false},
		{"dlq.tasks.report", "", "", false},
		{"tasks.q.", "", "", false},
	}
	for _, tt := range tests {
		q, typ, ok := SplitSubject(tt.subject)
		if q != tt.queue || typ != tt.typ || ok != tt.ok {
			t.Errorf("SplitSubject(%q) = %q, %q, %v, want %q, %q, %v", tt.subject, q, typ, ok, tt.queue, tt.typ, tt.ok)
		}
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

// TestAddFailureBounded: a record keeps its last MaxFailures failures,
// oldest first, each error cut to MaxFailureBytes, with the generation it
// failed in.
func TestAddFailureBounded(t *testing.T) {
	var r Record
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= MaxFailures+3; i++ {
		if i == 5 {
			r.Generation = 1
		}
		r.AddFailure(i, strings.Repeat("x", MaxFailureBytes+i), at.Add(time.Duration(i)*time.Second))
	}
	if len(r.Failures) != MaxFailures {
		t.Fatalf("%d failures kept, want %d", len(r.Failures), MaxFailures)
	}
	if first, last := r.Failures[0], r.Failures[MaxFailures-1]; first.Attempt != 4 || last.Attempt != MaxFailures+3 ||
		first.Generation != 0 || last.Generation != 1 {
		t.Errorf("kept attempts %d (gen %d) … %d (gen %d), want 4 (gen 0) … %d (gen 1)",
			first.Attempt, first.Generation, last.Attempt, last.Generation, MaxFailures+3)
	}
	for _, f := range r.Failures {
		if len(f.Error) > MaxFailureBytes+len("…") {
			t.Fatalf("failure of %d bytes kept, want at most %d", len(f.Error), MaxFailureBytes)
		}
	}
}
