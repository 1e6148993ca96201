package envflag

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

// Set binds flags to a flag.FlagSet with environment fallbacks read through
// Getenv (never os.Getenv, so tests can inject the environment).
type Set struct {
	FS     *flag.FlagSet
	Getenv func(string) string
	errs   []error
}

// New returns a Set over fs reading the environment through getenv.
func New(fs *flag.FlagSet, getenv func(string) string) *Set {
	return &Set{FS: fs, Getenv: getenv}
}

func (s *Set) usage(usage, env string) string {
	if env == "" {
		return usage
	}
	return fmt.Sprintf("%s (env %s)", usage, env)
}

// String defines a string flag; env may be empty for flag-only settings.
func (s *Set) String(p *string, name, env, def, usage string) {
	if v := s.lookup(env); v != "" {
		def = v
	}
	s.FS.StringVar(p, name, def, s.usage(usage, env))
}

// Int defines an int flag.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	define(s, s.FS.IntVar, p, name, env, def, usage, strconv.Atoi, "not an integer")
}

// Int64 defines an int64 flag.
func (s *Set) Int64(p *int64, name, env string, def int64, usage string) {
	parse := func(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) }
	define(s, s.FS.Int64Var, p, name, env, def, usage, parse, "not an integer")
}

// Duration defines a time.Duration flag.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	define(s, s.FS.DurationVar, p, name, env, def, usage, time.ParseDuration, "not a duration (e.g. 5s)")
}

// Bool defines a bool flag.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	define(s, s.FS.BoolVar, p, name, env, def, usage, strconv.ParseBool, "not a boolean")
}

// define binds a flag of type T with bind (a flag.FlagSet's XxxVar). A set
// environment variable replaces def when parse accepts it; when it does not,
// def stays and the error, worded as want, is collected for Err.
func define[T any](s *Set, bind func(*T, string, T, string), p *T, name, env string, def T, usage string,
	parse func(string) (T, error), want string) {
	if v := s.lookup(env); v != "" {
		if x, err := parse(v); err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: %s", env, v, want))
		} else {
			def = x
		}
	}
	bind(p, name, def, s.usage(usage, env))
}

// Func defines a flag parsed by parse, for values with a syntax of their
// own (lists, maps). A set environment variable is parsed first; its error
// is collected for Err.
func (s *Set) Func(name, env, usage string, parse func(string) error) {
	if v := s.lookup(env); v != "" {
		if err := parse(v); err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: %w", env, v, err))
		}
	}
	s.FS.Func(name, s.usage(usage, env), parse)
}

func (s *Set) lookup(env string) string {
	if env == "" || s.Getenv == nil {
		return ""
	}
	return s.Getenv(env)
}

// Err returns every environment value that did not parse, joined.
func (s *Set) Err() error { return errors.Join(s.errs...) }
