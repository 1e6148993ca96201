// Package cli is scalelab's command line: one function per command
// (up, the five roles, token, tasks, users, probe, bench), each in the
// style run(ctx, args, getenv, stdin, stdout, stderr) error, with every
// dependency passed in and no globals, so tests run a command exactly as
// main does.
//
// Layer: commands (docs/ARCHITECTURE.md). It may import the wiring
// (platform/), the roles, natsconf and internal/; only main imports it, and
// it must not import main or the bench programs.
package cli
