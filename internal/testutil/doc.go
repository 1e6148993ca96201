// Package testutil holds the test helpers every package's tests share: a
// real NATS server per test (in-process, random port, temp store), a
// connection to it, polling until a deadline instead of sleeping, and a
// small real disk to fill (MountTmpfs, FillDisk; root only).
//
// It is imported only from _test.go files.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package testutil
