// Package cachesvc is the shared cache role. It owns:
//
//   - the NATS KV bucket "cache" (cache.Bucket): it provisions it at start
//     with a bucket-wide TTL, per-key TTLs (LimitMarkerTTL), history 1 and
//     a size cap; gateways read and write it directly through
//     internal/cache, so the cache is shared by every gateway and visible
//     with `nats kv get cache <key>`;
//   - the lab's cache API over HTTP (:5004):
//     GET /cache/{key} → {"value": ...}, POST /cache/{key} {"value": ...},
//     DELETE /cache/{key}, DELETE /cache (flush), and GET /cache for the
//     bucket's statistics plus every gateway's per-tier hits and misses.
//     Writes, deletes and flushes are broadcast on
//     cache.SubjectInvalidate, so when they return no gateway's
//     near-cache serves the old value;
//     Writes, deletes and the flush need a token with cache:write, reading
//     a value one with cache:read (verified as the gateways do, with the
//     same SCALELAB_JWT_* keys; cachesvc refuses to start without them);
//     the statistics are open;
//   - /healthz, /readyz and /metrics on the same port, open.
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package cachesvc
