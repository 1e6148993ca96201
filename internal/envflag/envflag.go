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
	if v := s.lookup(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			def = n
		}
	}
	s.FS.IntVar(p, name, def, s.usage(usage, env))
}

// Int64 defines an int64 flag.
func (s *Set) Int64(p *int64, name, env string, def int64, usage string) {
	if v := s.lookup(env); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not an integer", env, v))
		} else {
			def = n
		}
	}
	s.FS.Int64Var(p, name, def, s.usage(usage, env))
}

// Duration defines a time.Duration flag.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v := s.lookup(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not a duration (e.g. 5s)", env, v))
		} else {
			def = d
		}
	}
	s.FS.DurationVar(p, name, def, s.usage(usage, env))
}

// Bool defines a bool flag.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	if v := s.lookup(env); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q: not a boolean", env, v))
		} else {
			def = b
		}
	}
	s.FS.BoolVar(p, name, def, s.usage(usage, env))
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
