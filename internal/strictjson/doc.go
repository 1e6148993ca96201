// Package strictjson is the one strict reading of JSON that every role
// uses for every body it accepts (the gateway's routes, cachesvc, dbsvc
// over NATS and HTTP, a task's payload in the worker): exactly one JSON
// value, no duplicate keys at any depth, keys matched exactly (case
// included), no unknown object fields, numbers in range of their field's
// type, valid UTF-8, nothing after the value. A typo in a field name, a
// key sent twice or in another case is then an error the client sees,
// not a field silently ignored or read one way here and another way by
// the next reader: encoding/json, for one, takes the last duplicate and
// matches keys case-insensitively.
//
// It is built on github.com/go-json-experiment/json, the upstream of
// encoding/json/v2 (which Go 1.26 ships only under GOEXPERIMENT=jsonv2),
// whose defaults are these rules; the package adds the messages clients
// read, in JSON's terms, and Canonical, the form in which a validated body
// is stored and passed on.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package strictjson
