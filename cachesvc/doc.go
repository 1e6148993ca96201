// Package cachesvc is the shared cache role. It owns:
//
//   - the NATS KV bucket "cache" (Bucket): it provisions it at start with a
//     bucket-wide TTL, history 1 and a size cap; gateways read and write it
//     directly through Client (cache-aside), so the cache is shared by every
//     gateway and visible with `nats kv get cache <key>`;
//   - the lab's cache API over HTTP (:5004):
//     GET /cache/{key} → {"value": ...}, POST /cache/{key} {"value": ...},
//     and GET /cache for the bucket's statistics;
//   - /healthz, /readyz and /metrics on the same port.
package cachesvc
