package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// builtinCatalog is a catalog of the built-in types and queues, without
// NATS: a name it does not hold is not registered.
func builtinCatalog(extra ...TypeDef) *Catalog {
	c := &Catalog{types: map[string]*catalogType{}, queues: map[string]uint64{}}
	for i, d := range append(BuiltinTypes(), extra...) {
		c.types[d.Name] = &catalogType{def: d, rev: uint64(i + 1), comp: &compiledSchema{}}
	}
	for i, q := range BuiltinQueues {
		c.queues[q] = uint64(i + 1)
	}
	return c
}

func mustParse(t *testing.T, body string) *Submission {
	t.Helper()
	s, err := Parse([]byte(body))
	if err != nil {
		t.Fatalf("Parse(%s) = %v", body, err)
	}
	return s
}

// TestCatalogResolve: the type and queue must be registered, and the
// payload (without the reserved members) valid against the type's schema;
// each refusal says what is wrong as a client reads it.
func TestCatalogResolve(t *testing.T) {
	t.Parallel()
	c := builtinCatalog(
		TypeDef{Name: "strict", Queue: "low", MaxAttempts: 2, TimeoutMS: 500, Schema: json.RawMessage(
			`{"type":"object","required":["to"],"additionalProperties":false,"properties":{"to":{"type":"string","minLength":3},"n":{"type":"integer","exclusiveMaximum":2.5}}}`)},
		TypeDef{Name: "broken", Schema: json.RawMessage(`{"type":"nonsense"}`)},
		TypeDef{Name: "reads-files", Schema: json.RawMessage(`{"$ref":"file:///etc/passwd"}`)},
		TypeDef{Name: "free"},
		TypeDef{Name: "nested", Schema: json.RawMessage(`{"type":"object","properties":{"a":{"properties":{"b":{}}}}}`)},
	)
	tests := []struct {
		body, want, queue string // want: "" accepted, else the error's text after "task: invalid: "
	}{
		{`{"task":"noop"}`, "", DefaultQueue},
		{`{"task":"sleep","duration_ms":600000}`, "", DefaultQueue},
		{`{"task":"sleep","duration_ms":600000,"queue":"critical","delay":"5s"}`, "", "critical"},
		{`{"task":"strict","to":"bob","run_at":"2030-01-01T00:00:00Z"}`, "", "low"},
		{`{"task":"strict","to":"bob","queue":"default"}`, "", DefaultQueue},
		{`{"task":"free","anything":[1,{"x":null}]}`, "", DefaultQueue},
		{`{"task":"nope"}`, `unknown task type "nope", want one of broken, free, nested, noop, reads-files, report, sleep, strict, tally`, ""},
		{`{"task":"a.b"}`, `unknown task type "a.b", want one of broken, free, nested, noop, reads-files, report, sleep, strict, tally`, ""},
		{`{"task":"noop","queue":"nope"}`, `unknown queue "nope", want one of critical, default, low`, ""},
		{`{"task":"sleep","duration_ms":600001}`, "payload: /duration_ms: must be <= 600000", ""},
		{`{"task":"sleep","duration_ms":-1}`, "payload: /duration_ms: must be >= 0", ""},
		{`{"task":"sleep","duration_ms":1e30}`, "payload: /duration_ms: must be <= 600000", ""},
		{`{"task":"sleep","duration_ms":"5"}`, "payload: /duration_ms: must be an integer, not a string", ""},
		{`{"task":"sleep","duration_ms":1.5}`, "payload: /duration_ms: must be an integer, not a number", ""},
		{`{"task":"strict"}`, "payload: missing property 'to'", ""},
		{`{"task":"strict","to":"bo"}`, "payload: /to: must be at least 3 characters long", ""},
		{`{"task":"strict","to":"bob","n":3}`, "payload: /n: must be < 2.5", ""},
		{`{"task":"strict","to":"bob","x":1}`, "payload: additional properties 'x' not allowed", ""},
		{`{"task":"sleep","Duration_ms":5}`, `payload: unknown field "Duration_ms" (keys are case-sensitive: the field is "duration_ms")`, ""},
		{`{"task":"sleep","duration_ms":1,"DURATION_MS":99999999}`, `payload: unknown field "DURATION_MS" (keys are case-sensitive: the field is "duration_ms")`, ""},
		{`{"task":"nested","a":{"B":1}}`, `payload: /a: unknown field "B" (keys are case-sensitive: the field is "b")`, ""},
		{`{"task":"nested","a":{"b":1,"c":2},"Note":1}`, "", DefaultQueue},
	}
	for _, tt := range tests {
		r, err := c.Resolve(t.Context(), mustParse(t, tt.body))
		if tt.want == "" {
			if err != nil || r.Queue != tt.queue {
				t.Errorf("Resolve(%s) = queue %q, %v, want queue %q, nil", tt.body, r.Queue, err, tt.queue)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || strings.TrimPrefix(err.Error(), "task: invalid: ") != tt.want {
			t.Errorf("Resolve(%s) = %v, want an error wrapping %v: %q", tt.body, err, ErrInvalid, tt.want)
		}
	}
	r, err := c.Resolve(t.Context(), mustParse(t, `{"task":"strict","to":"bob"}`))
	if err != nil || r.MaxAttempts != 2 || r.TimeoutMS != 500 {
		t.Errorf("Resolve(strict) = %+v, %v, want the type's limits 2 and 500", r, err)
	}
	// A schema that does not compile, or that would load a file, is the
	// registration's fault: ErrBadSchema, never ErrInvalid.
	for _, typ := range []string{"broken", "reads-files"} {
		_, err := c.Resolve(t.Context(), mustParse(t, `{"task":"`+typ+`"}`))
		if !errors.Is(err, ErrBadSchema) || errors.Is(err, ErrInvalid) {
			t.Errorf("Resolve(%s) = %v, want an error wrapping %v only", typ, err, ErrBadSchema)
		}
	}
	if err := CheckSchema("x", json.RawMessage(`{"$ref":"http://example.com/s.json"}`)); !errors.Is(err, ErrBadSchema) {
		t.Errorf("CheckSchema(remote $ref) = %v, want %v", err, ErrBadSchema)
	}
	if err := CheckSchema("x", BuiltinTypes()[2].Schema); err != nil {
		t.Errorf("CheckSchema(sleep's) = %v", err)
	}
}

// TestUniqueKey: one key per (type, window, chosen members); the reserved
// members and the others do not count.
func TestUniqueKey(t *testing.T) {
	t.Parallel()
	c := builtinCatalog(
		TypeDef{Name: "mail", Unique: &Unique{Keys: []string{"to"}, WindowMS: 60_000}},
		TypeDef{Name: "whole", Unique: &Unique{WindowMS: 60_000}},
		TypeDef{Name: "other", Unique: &Unique{Keys: []string{"to"}, WindowMS: 60_000}},
	)
	key := func(body string, at time.Time) string {
		t.Helper()
		r, err := c.Resolve(t.Context(), mustParse(t, body))
		if err != nil {
			t.Fatalf("Resolve(%s) = %v", body, err)
		}
		return r.UniqueKey(at)
	}
	t0 := time.UnixMilli(1_800_000_000_000) // a window's start
	in := t0.Add(59 * time.Second)
	next := t0.Add(60 * time.Second)
	a := key(`{"task":"mail","to":"a","subject":"x"}`, t0)
	if a == "" {
		t.Fatal("UniqueKey of a unique type = \"\"")
	}
	for _, tt := range []struct {
		body string
		at   time.Time
		same bool
	}{
		{`{"subject":"y","to":"a","task":"mail","delay":"1s"}`, in, true},
		{`{"task":"mail","to":"a","queue":"low"}`, t0, true},
		{`{"task":"mail","to":"b"}`, t0, false},
		{`{"task":"mail","to":"a"}`, next, false},
		{`{"task":"mail"}`, t0, false},
		{`{"task":"mail","to":null}`, t0, false},
		{`{"task":"other","to":"a"}`, t0, false},
	} {
		if got := key(tt.body, tt.at); (got == a) != tt.same {
			t.Errorf("UniqueKey(%s at +%v) same as the first = %v, want %v", tt.body, tt.at.Sub(t0), got == a, tt.same)
		}
	}
	if key(`{"task":"mail"}`, t0) == key(`{"task":"mail","to":null}`, t0) {
		t.Error("an absent key and a null one give the same UniqueKey")
	}
	w := key(`{"task":"whole","a":1,"b":[1,2]}`, t0)
	if w != key(`{"b":[1, 2],"task":"whole","a":1,"delay":"5s"}`, in) || w == key(`{"task":"whole","a":1}`, t0) {
		t.Error("UniqueKey without keys: want the whole payload, reserved members aside, compared canonically")
	}
	if key(`{"task":"noop"}`, t0) != "" {
		t.Error("UniqueKey of a type that is not unique != \"\"")
	}
	if strings.ContainsFunc(a[:1], func(r rune) bool { return r >= 0x20 && r <= 0x7e }) {
		t.Errorf("UniqueKey starts with %q, want a byte no Idempotency-Key holds", a[:1])
	}
}

// TestCatalogWatch: over a real NATS, the catalog holds the built-ins once
// opened, follows registrations and deletions, and finds a type or queue
// registered a moment ago even before its watch has caught up.
func TestCatalogWatch(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	if _, err := OpenCatalog(t.Context(), js); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("OpenCatalog() before Provision = %v, want %v", err, ErrNotProvisioned)
	}
	provision(t, js)
	c, err := OpenCatalog(t.Context(), js)
	if err != nil {
		t.Fatalf("OpenCatalog() = %v", err)
	}
	t.Cleanup(c.Stop)
	if got := fmt.Sprint(typeNamesOf(c.Types())); got != "[noop report sleep tally]" {
		t.Errorf("Types() after open = %s, want the built-ins", got)
	}
	if got := fmt.Sprint(c.Queues()); got != "[critical default low]" {
		t.Errorf("Queues() after open = %s, want the built-ins", got)
	}
	reg := c.Registry()
	// Stop the watch, so that only the read on a miss can find the new type.
	c.Stop()
	if err := reg.PutType(t.Context(), TypeDef{Name: "thumb", Queue: "images", Schema: json.RawMessage(`{"type":"object","required":["url"]}`)}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve(t.Context(), mustParse(t, `{"task":"thumb","url":"x"}`))
	if err != nil || r.Queue != "images" {
		t.Fatalf("Resolve(a type registered after the watch stopped) = %+v, %v, want queue images", r, err)
	}
	if _, err := c.Resolve(t.Context(), mustParse(t, `{"task":"thumb"}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Resolve(thumb without url) = %v, want its schema's refusal", err)
	}
	if _, err := c.Resolve(t.Context(), mustParse(t, `{"task":"noop","queue":"images"}`)); err != nil {
		t.Errorf("Resolve(noop on the queue registered with thumb) = %v", err)
	}

	// A live watch follows a change of schema and a deletion.
	c2, err := OpenCatalog(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Stop)
	if err := reg.PutType(t.Context(), TypeDef{Name: "thumb", Schema: json.RawMessage(`{"type":"object","required":["src"]}`)}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		_, err := c2.Resolve(t.Context(), mustParse(t, `{"task":"thumb","src":"x"}`))
		return err
	})
	if err := reg.defs.Delete(t.Context(), TypeKeyPrefix+"thumb"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if _, err := c2.Resolve(t.Context(), mustParse(t, `{"task":"thumb","src":"x"}`)); !errors.Is(err, ErrInvalid) {
			return fmt.Errorf("Resolve(deleted type) = %v, want unknown", err)
		}
		return nil
	})
}

func typeNamesOf(ds []TypeDef) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}
