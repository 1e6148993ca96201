// Package envflag defines command-line flags whose defaults come from
// SCALELAB_* environment variables, so that a flag overrides the environment
// and the environment overrides the built-in default.
//
// Values from the environment that do not parse are collected rather than
// ignored: Err reports them so that a role refuses to start on a typo.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package envflag
