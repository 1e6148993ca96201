// Package strictjson decodes request bodies whose schema is fixed, the one
// way every role does: exactly one JSON value, no unknown object fields,
// nothing after it. A typo in a field name is then an error the client
// sees, not a silently ignored field.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package strictjson
