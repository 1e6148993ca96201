// Package authtest makes keys and tokens for tests: those of package auth
// and those of the roles that verify tokens (the gateway), so that both
// drive the same table of bad tokens. It is imported only from _test.go
// files.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package authtest
