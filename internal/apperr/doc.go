// Package apperr defines the error codes that cross process boundaries and
// translates them to HTTP responses and NATS service errors.
//
// Inside a process, code returns ordinary wrapped errors. Where an error
// leaves the process (an HTTP response, a NATS micro reply), it is turned into
// an *Error with a stable Code, so that clients can branch on it without
// parsing messages.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package apperr
