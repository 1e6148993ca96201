// Package task holds what the gateway (which submits tasks and reads their
// records) and the worker (which runs them) share: the names of the JetStream
// stream and KV bucket, the message envelope, the task record, the shipped
// task types and their payload validation.
//
// Flow: the gateway creates a record (state queued) in the KV bucket "tasks",
// then publishes an Envelope to "tasks.<type>" on the stream TASKS. A worker
// pulls it through the durable consumer "workers", moves the record to
// running, runs the handler, records the outcome, and only then acks. Every
// record write is a compare-and-set; the envelope carries the record as
// created, and each write starts from the one before, so that in the
// common case (nobody else wrote) a task costs no record read at all.
//
// A record belongs to its submitter: Owner is the `sub` of the token that
// submitted it, and the gateway shows or cancels a task only for that
// subject or a token with scope tasks:admin. Records written before owners
// existed have none, and only tasks:admin sees them. Every writer after the
// gateway (the worker, `scalelab tasks dlq retry`) changes a record through
// Store.Update, which keeps the fields it does not set, Owner among them.
//
// Task ids are NewID's 128 random bits, or, for a submission with an
// Idempotency-Key, a keyed hash of the key and the subject (the gateway's
// idempotentID); both are 32 lowercase hex digits, so they cannot be
// computed from another id and are valid KV keys and subject tokens.
//
// The bucket has a byte limit (ProvisionConfig.MaxRecordBytes); Store.Create
// refuses new records (ErrFull) past half of it, keeping the rest for the
// records of accepted tasks to grow as they run.
//
// The streams and the bucket are created and updated only by admin with
// Provision (`up`, `scalelab tasks provision`); the gateway and the worker
// Open them, waiting until they exist, and their NATS users may not
// change them.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package task
