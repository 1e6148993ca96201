// Package certs is the TLS of scalelab's front door: a certificate and key
// read from PEM files and read again when the files change (Reloader), the
// server configuration that serves them with modern defaults
// (ServerConfig), and the self-signed certificate `scalelab up --tls`
// makes for 127.0.0.1 and localhost (SelfSigned).
//
// A reload never drops a connection: a handshake takes the certificate
// that is current when it starts, and connections already open keep the
// one they were made with. A pair that does not load (a key that does not
// match, a half-written file, a certificate out of its validity) is refused
// with the reason and the old pair stays.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package certs
