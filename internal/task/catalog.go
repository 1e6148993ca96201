package task

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// ErrBadSchema is wrapped by Catalog.Resolve's error when the type's
// registered schema is not a JSON Schema it can compile: the fault of the
// worker that registered it, not of the submission, so it does not wrap
// ErrInvalid (the gateway answers 500, and logs it).
var ErrBadSchema = errors.New("task: task type has an invalid schema")

// Reserved are the members of a /longtask body that are not its payload:
// a type's schema sees the body without them.
var Reserved = []string{"task", "queue", "run_at", "delay"}

// maxNamesListed bounds the names an "unknown type" or "unknown queue"
// error lists.
const maxNamesListed = 50

// Catalog is the task-type registry as a submitter needs it: which types
// and queues exist, each type's compiled JSON Schema. It is a copy in
// memory, kept current by a watch of RegistryBucket, so resolving a
// submission reads nothing from NATS; a name it does not hold is read once
// from the bucket, so a type registered a moment ago (the watch not yet
// caught up) is not refused. The gateway and the SDK's NATS client resolve
// submissions with it, so both accept and refuse the same bodies.
type Catalog struct {
	reg     *Registry
	watcher jetstream.KeyWatcher
	done    chan struct{} // closed when the watch ends

	mu     sync.RWMutex
	types  map[string]*catalogType
	queues map[string]uint64 // name → revision
}

// catalogType is one registered type and its schema, compiled on first use.
type catalogType struct {
	def  TypeDef
	rev  uint64
	comp *compiledSchema
}

// compiledSchema is a type's schema, compiled once: an entry replaced by an
// update that changes neither UpdatedAt nor the schema keeps it.
type compiledSchema struct {
	once     sync.Once
	schema   *jsonschema.Schema // nil: no schema, any object
	declared declared           // the members its "properties" name
	err      error
}

// declared are the members a schema names in "properties", and theirs in
// turn: the members a payload must spell exactly as declared.
type declared map[string]declared

// declaredOf reads the "properties" of a schema document, nested.
func declaredOf(doc any) declared {
	m, _ := doc.(map[string]any)
	props, _ := m["properties"].(map[string]any)
	if len(props) == 0 {
		return nil
	}
	d := make(declared, len(props))
	for k, sub := range props {
		d[k] = declaredOf(sub)
	}
	return d
}

// checkCase refuses a member of v whose name differs from a declared one
// only in case, as the strict reader does for the reserved members: Go's
// encoding/json (a worker's HandleJSON, say) matches names regardless of
// case, so {"Duration_ms":1e9}, which the schema does not look at, would
// reach such a worker as duration_ms, past the schema's bounds.
func (d declared) checkCase(v any, at []string) error {
	m, ok := v.(map[string]any)
	if !ok || len(d) == 0 {
		return nil
	}
	for k, sub := range m {
		if inner, ok := d[k]; ok {
			if err := inner.checkCase(sub, append(at, k)); err != nil {
				return err
			}
			continue
		}
		for name := range d {
			if strings.EqualFold(name, k) {
				return fmt.Errorf("%w: payload: %sunknown field %q (keys are case-sensitive: the field is %q)",
					ErrInvalid, pointerPrefix(at), k, name)
			}
		}
	}
	return nil
}

// pointerPrefix is "" at the payload's top, else the JSON pointer of at
// and ": ".
func pointerPrefix(at []string) string {
	if len(at) == 0 {
		return ""
	}
	return jsonPointer(at) + ": "
}

// catalogLoadTimeout bounds how long opening a catalog waits for the
// registry's current values.
const catalogLoadTimeout = 5 * time.Second

// OpenCatalog opens the registry's buckets and watches RegistryBucket
// until Stop is called (or the connection closes). It returns once the
// catalog holds the registry as it is now, waiting at most 5 s. ctx must
// last as long as the watch: the watch's consumer is recreated under it
// when the bus fails over. Its error wraps ErrNotProvisioned while the
// buckets do not exist.
func OpenCatalog(ctx context.Context, js jetstream.JetStream) (*Catalog, error) {
	reg, err := OpenRegistry(ctx, js)
	if err != nil {
		return nil, err
	}
	return NewCatalog(ctx, reg)
}

// NewCatalog watches reg's definitions, as OpenCatalog does.
func NewCatalog(ctx context.Context, reg *Registry) (*Catalog, error) {
	w, err := reg.defs.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", RegistryBucket, err)
	}
	c := &Catalog{reg: reg, watcher: w, done: make(chan struct{}),
		types: map[string]*catalogType{}, queues: map[string]uint64{}}
	loaded := make(chan struct{})
	go c.watch(loaded)
	select {
	case <-loaded:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("watch bucket %s: ended before the current values", RegistryBucket)
	case <-ctx.Done():
		c.Stop()
		return nil, fmt.Errorf("watch bucket %s: %w", RegistryBucket, ctx.Err())
	case <-time.After(catalogLoadTimeout):
		c.Stop()
		return nil, fmt.Errorf("watch bucket %s: no current values within %v", RegistryBucket, catalogLoadTimeout)
	}
}

// Stop ends the watch; the catalog keeps answering from what it holds,
// and from the bucket for the rest.
func (c *Catalog) Stop() {
	_ = c.watcher.Stop()
	<-c.done
}

// Registry is the registry the catalog watches.
func (c *Catalog) Registry() *Registry { return c.reg }

// watch applies the watch's updates until it ends, closing loaded at the
// marker that follows the current values.
func (c *Catalog) watch(loaded chan struct{}) {
	defer close(c.done)
	for e := range c.watcher.Updates() {
		if e == nil {
			if loaded != nil {
				close(loaded)
				loaded = nil
			}
			continue
		}
		c.apply(e.Key(), e.Value(), e.Revision(), e.Operation() != jetstream.KeyValuePut)
	}
}

// apply records the value of key at revision rev, or its deletion. A value
// older than the one held (read from the bucket on a miss while the watch
// lagged) is ignored.
func (c *Catalog) apply(key string, value []byte, rev uint64, deleted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case strings.HasPrefix(key, TypeKeyPrefix):
		name := strings.TrimPrefix(key, TypeKeyPrefix)
		old := c.types[name]
		if old != nil && old.rev >= rev {
			return
		}
		if deleted {
			delete(c.types, name)
			return
		}
		var d TypeDef
		if json.Unmarshal(value, &d) != nil || d.Name != name {
			return // not a definition: keep what was there
		}
		t := &catalogType{def: d, rev: rev, comp: &compiledSchema{}}
		if old != nil && old.def.UpdatedAt.Equal(d.UpdatedAt) && bytes.Equal(old.def.Schema, d.Schema) {
			t.comp = old.comp
		}
		c.types[name] = t
	case strings.HasPrefix(key, QueueKeyPrefix):
		name := strings.TrimPrefix(key, QueueKeyPrefix)
		if old, ok := c.queues[name]; ok && old >= rev {
			return
		}
		if deleted {
			delete(c.queues, name)
			return
		}
		c.queues[name] = rev
	}
}

// lookupType returns the registration of name, reading it from the bucket
// when the catalog does not hold it. nil, nil: not registered.
func (c *Catalog) lookupType(ctx context.Context, name string) (*catalogType, error) {
	c.mu.RLock()
	t := c.types[name]
	c.mu.RUnlock()
	if t != nil || !ValidName(name) {
		return t, nil
	}
	found, err := c.readMiss(ctx, TypeKeyPrefix+name)
	if err != nil || !found {
		return nil, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.types[name], nil
}

// hasQueue reports whether the queue name is registered, reading it from
// the bucket when the catalog does not hold it.
func (c *Catalog) hasQueue(ctx context.Context, name string) (bool, error) {
	c.mu.RLock()
	_, ok := c.queues[name]
	c.mu.RUnlock()
	if ok || !ValidName(name) {
		return ok, nil
	}
	return c.readMiss(ctx, QueueKeyPrefix+name)
}

// HasType reports whether the task type name is registered (GET /tasks
// refuses a filter on a type that is not), reading the bucket when the
// catalog does not hold it.
func (c *Catalog) HasType(ctx context.Context, name string) (bool, error) {
	t, err := c.lookupType(ctx, name)
	return t != nil, err
}

// HasQueue reports whether the queue name is registered, reading the
// bucket when the catalog does not hold it.
func (c *Catalog) HasQueue(ctx context.Context, name string) (bool, error) {
	return c.hasQueue(ctx, name)
}

// readMiss reads key from the bucket into the catalog and reports whether
// it exists.
func (c *Catalog) readMiss(ctx context.Context, key string) (bool, error) {
	if c.reg == nil {
		return false, nil // a catalog of fixed definitions (tests)
	}
	e, err := c.reg.defs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	c.apply(key, e.Value(), e.Revision(), false)
	return true, nil
}

// Types returns the registered types the catalog holds, sorted by name.
func (c *Catalog) Types() []TypeDef {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]TypeDef, 0, len(c.types))
	for _, t := range c.types {
		out = append(out, t.def)
	}
	slices.SortFunc(out, func(a, b TypeDef) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Queues returns the names of the registered queues the catalog holds,
// sorted.
func (c *Catalog) Queues() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Sorted(maps.Keys(c.queues))
}

// typeNames returns the registered types' names, sorted.
func (c *Catalog) typeNames() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Sorted(maps.Keys(c.types))
}

// Resolved is a submission checked against the registry: where it goes
// and the limits its record carries.
type Resolved struct {
	// Type is the type's registration.
	Type TypeDef
	// Queue is the submission's queue, else the type's, else DefaultQueue.
	Queue string
	// MaxAttempts and TimeoutMS are the type's limits (0: the worker's).
	MaxAttempts int
	TimeoutMS   int64
	// members are the payload's members, canonical, without the reserved
	// ones: what UniqueKey compares.
	members map[string]json.RawMessage
}

// Resolve checks s against the registry: its type is registered, the
// queue it names (if any) is registered, and its payload (the body without
// Reserved) is valid against the type's schema. Errors that are the
// submission's fault wrap ErrInvalid with a message for the client; a
// schema that does not compile wraps ErrBadSchema; any other error is the
// registry's bucket failing.
func (c *Catalog) Resolve(ctx context.Context, s *Submission) (Resolved, error) {
	t, err := c.lookupType(ctx, s.Type)
	if err != nil {
		return Resolved{}, err
	}
	if t == nil {
		return Resolved{}, fmt.Errorf("%w: unknown task type %q, want one of %s", ErrInvalid, Truncate(s.Type, 40), listNames(c.typeNames()))
	}
	d := t.def
	r := Resolved{Type: d, Queue: s.Queue, MaxAttempts: d.MaxAttempts, TimeoutMS: d.TimeoutMS}
	if r.Queue != "" {
		ok, err := c.hasQueue(ctx, r.Queue)
		if err != nil {
			return Resolved{}, err
		}
		if !ok {
			return Resolved{}, fmt.Errorf("%w: unknown queue %q, want one of %s", ErrInvalid, Truncate(r.Queue, 40), listNames(c.Queues()))
		}
	} else if r.Queue = d.Queue; r.Queue == "" {
		r.Queue = DefaultQueue
	}
	schema, decl, err := t.compiled()
	if err != nil {
		return Resolved{}, err
	}
	if schema != nil {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(s.Payload))
		if err != nil {
			// Unreachable: Parse accepted the payload.
			return Resolved{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if m, ok := doc.(map[string]any); ok {
			for _, k := range Reserved {
				delete(m, k)
			}
		}
		if err := decl.checkCase(doc, nil); err != nil {
			return Resolved{}, err
		}
		if err := schema.Validate(doc); err != nil {
			return Resolved{}, fmt.Errorf("%w: payload: %s", ErrInvalid, describeInvalid(err))
		}
	}
	if d.Unique != nil {
		if err := json.Unmarshal(s.Payload, &r.members); err != nil {
			return Resolved{}, fmt.Errorf("%w: %v", ErrInvalid, err) // unreachable, as above
		}
		for _, k := range Reserved {
			delete(r.members, k)
		}
	}
	return r, nil
}

// UniqueKey is what makes a task of a unique type (TypeDef.Unique) the same
// task as another, at now: "" when the type is not unique. Two
// submissions of the type with the same key are one task; the caller
// derives the task id from it, with the submitter (a unique task is unique
// per submitter). It holds the type, the window's index (now in
// milliseconds since the epoch, divided by the window) and the values of
// Unique.Keys, or of every payload member when it names none, each
// canonical and length-prefixed, so that no two different inputs give the
// same key. It begins with a NUL byte, which an Idempotency-Key (printable
// ASCII) never holds, so the two kinds of key never meet.
func (r Resolved) UniqueKey(now time.Time) string {
	u := r.Type.Unique
	if u == nil || u.WindowMS <= 0 {
		return ""
	}
	keys := slices.Clone(u.Keys)
	if len(keys) == 0 {
		for k := range r.members {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	b := []byte("\x00unique\x00")
	field := func(s []byte) {
		b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
		b = append(b, s...)
	}
	field([]byte(r.Type.Name))
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()/u.WindowMS))
	for _, k := range keys {
		field([]byte(k))
		if v, ok := r.members[k]; ok {
			field(v)
		} else {
			field(nil) // absent: unlike any JSON value, null included
		}
	}
	return string(b)
}

// compiled returns the type's schema, compiled on first use, and the
// members it declares; nil when the type has none.
func (t *catalogType) compiled() (*jsonschema.Schema, declared, error) {
	t.comp.once.Do(func() {
		if len(t.def.Schema) == 0 || anyObject(t.def.Schema) {
			// No schema, or one that Parse already enforces (the body
			// is a JSON object): no second reading of every payload.
			return
		}
		t.comp.schema, t.comp.declared, t.comp.err = compileSchema(t.def.Name, t.def.Schema)
	})
	return t.comp.schema, t.comp.declared, t.comp.err
}

// anyObject reports whether schema is {"type":"object"} and nothing more
// (the built-in noop's and report's), which accepts every body Parse does.
func anyObject(schema json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(schema, &m) == nil && len(m) == 1 && string(bytes.TrimSpace(m["type"])) == `"object"`
}

// compileSchema compiles the schema of the type name: draft 2020-12 unless
// it says otherwise, formats not asserted. It loads nothing: a $ref to a
// file or a URL is an error, or a worker's schema could make the gateway
// read its files or call out.
func compileSchema(name string, raw json.RawMessage) (*jsonschema.Schema, declared, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadSchema, name, err)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.UseLoader(noLoader{})
	url := "urn:scalelab:task-type:" + name
	if err := comp.AddResource(url, doc); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadSchema, name, err)
	}
	s, err := comp.Compile(url)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrBadSchema, name, err)
	}
	return s, declaredOf(doc), nil
}

// noLoader refuses to load any schema a schema refers to.
type noLoader struct{}

// Load refuses url.
func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s: task type schemas may not refer to other documents", url)
}

// CheckSchema reports whether raw compiles as a type's JSON Schema, as the
// gateway will compile it: a worker can check its schema before
// registering it. Its error wraps ErrBadSchema.
func CheckSchema(name string, raw json.RawMessage) error {
	_, _, err := compileSchema(name, raw)
	return err
}

// schemaPrinter writes the schema library's messages in English.
var schemaPrinter = message.NewPrinter(language.English)

// kindMessage says why a value failed its schema. The library's own
// message, except for bounds, which it writes as a reader of prose
// ("600,001", "1×10³⁰"): a client compares them with JSON numbers.
func kindMessage(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = jsonTypeName(w)
		}
		return fmt.Sprintf("must be %s, not %s", strings.Join(want, " or "), jsonTypeName(k.Got))
	case *kind.Minimum:
		return "must be >= " + ratString(k.Want)
	case *kind.Maximum:
		return "must be <= " + ratString(k.Want)
	case *kind.ExclusiveMinimum:
		return "must be > " + ratString(k.Want)
	case *kind.ExclusiveMaximum:
		return "must be < " + ratString(k.Want)
	case *kind.MultipleOf:
		return "must be a multiple of " + ratString(k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %d characters long", k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %d characters long", k.Want)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %d items", k.Want)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %d items", k.Want)
	case *kind.MinProperties:
		return fmt.Sprintf("must have at least %d members", k.Want)
	case *kind.MaxProperties:
		return fmt.Sprintf("must have at most %d members", k.Want)
	}
	return k.LocalizedString(schemaPrinter)
}

// jsonTypeName is a JSON Schema type with its article: "an integer".
func jsonTypeName(t string) string {
	switch t {
	case "null":
		return t
	case "integer", "object", "array":
		return "an " + t
	}
	return "a " + t
}

// ratString writes a schema's bound as JSON would: an integer as one, else
// a decimal.
func ratString(r *big.Rat) string {
	if r == nil {
		return "?"
	}
	if r.IsInt() {
		return r.Num().String()
	}
	return strings.TrimRight(r.FloatString(9), "0")
}

// describeInvalid turns a schema validation error into the client's
// message: each failing location as a JSON pointer, and why (at most
// three, the deepest first as the library orders them).
func describeInvalid(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var leaves []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			msg := kindMessage(e.ErrorKind)
			if len(e.InstanceLocation) > 0 {
				msg = jsonPointer(e.InstanceLocation) + ": " + msg
			}
			leaves = append(leaves, msg)
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	leaves = slices.Compact(leaves)
	if len(leaves) > 3 {
		leaves = append(leaves[:3], fmt.Sprintf("and %d more", len(leaves)-3))
	}
	return strings.Join(leaves, "; ")
}

// jsonPointer writes a location as a JSON pointer (RFC 6901).
func jsonPointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

// listNames joins names for an error message, at most maxNamesListed.
func listNames(names []string) string {
	if len(names) == 0 {
		return "(none registered)"
	}
	if len(names) > maxNamesListed {
		return strings.Join(names[:maxNamesListed], ", ") + fmt.Sprintf(", … (%d more: GET /task-types)", len(names)-maxNamesListed)
	}
	return strings.Join(names, ", ")
}
