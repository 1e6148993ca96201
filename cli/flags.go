package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/scalelab/scalelab/internal/envflag"
)

// newFlags makes the flag set of the command name: its errors and -h go to
// stderr, usage (when not "") before the flags' defaults, and each flag
// defined through the envflag.Set may come from the environment (getenv).
func newFlags(name, usage string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *envflag.Set) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if usage != "" {
		fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	}
	return fs, envflag.New(fs, getenv)
}

// parseFlags parses args on fs. help is true when -h was asked for: the
// flag package has printed the usage, and the command returns nil. A bad
// flag is a usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return true, nil
	case err != nil:
		return false, usageErr(err)
	}
	return false, nil
}
