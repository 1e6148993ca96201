package envflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// settings is one of each kind of flag, all with env fallbacks.
type settings struct {
	Name    string
	Count   int
	Wait    time.Duration
	Verbose bool
}

func defaults() settings {
	return settings{Name: "def", Count: 1, Wait: time.Second, Verbose: false}
}

// parse defines the four flags over env and parses args.
func parse(t *testing.T, env map[string]string, args []string) (settings, *Set) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := New(fs, func(k string) string { return env[k] })
	got := defaults()
	s.String(&got.Name, "name", "T_NAME", got.Name, "the name")
	s.Int(&got.Count, "count", "T_COUNT", got.Count, "the count")
	s.Duration(&got.Wait, "wait", "T_WAIT", got.Wait, "the wait")
	s.Bool(&got.Verbose, "verbose", "T_VERBOSE", got.Verbose, "be chatty")
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse(%q) = %v", args, err)
	}
	return got, s
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	fullEnv := map[string]string{"T_NAME": "env", "T_COUNT": "2", "T_WAIT": "2s", "T_VERBOSE": "true"}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want settings
	}{
		{"defaults", nil, nil, defaults()},
		{"env over default", fullEnv, nil, settings{Name: "env", Count: 2, Wait: 2 * time.Second, Verbose: true}},
		{"flag over env", fullEnv, []string{"-name=flag", "-count=3", "-wait=3m", "-verbose=false"},
			settings{Name: "flag", Count: 3, Wait: 3 * time.Minute, Verbose: false}},
		{"flag over default", nil, []string{"-name", "flag", "-count", "-4", "-wait", "4ms", "-verbose"},
			settings{Name: "flag", Count: -4, Wait: 4 * time.Millisecond, Verbose: true}},
		{"mixed", map[string]string{"T_COUNT": "7", "T_VERBOSE": "1"}, []string{"-wait=5h"},
			settings{Name: "def", Count: 7, Wait: 5 * time.Hour, Verbose: true}},
		{"empty env is unset", map[string]string{"T_NAME": "", "T_COUNT": "", "T_WAIT": "", "T_VERBOSE": ""}, nil, defaults()},
		{"bool env false over flag absent", map[string]string{"T_VERBOSE": "0", "T_COUNT": "-3", "T_WAIT": "1h30m"}, nil,
			settings{Name: "def", Count: -3, Wait: 90 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, s := parse(t, tt.env, tt.args)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parsed settings mismatch (-want +got):\n%s", diff)
			}
			if err := s.Err(); err != nil {
				t.Errorf("Err() = %v, want nil", err)
			}
		})
	}
}

func TestBadEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		wantVars []string // each must be named in Err()
		want     settings // bad values leave the default
	}{
		{"bad int", map[string]string{"T_COUNT": "ten"}, nil, []string{`T_COUNT="ten"`}, defaults()},
		{"bad duration", map[string]string{"T_WAIT": "5"}, nil, []string{`T_WAIT="5"`}, defaults()},
		{"bad bool", map[string]string{"T_VERBOSE": "yes"}, nil, []string{`T_VERBOSE="yes"`}, defaults()},
		{"all bad at once", map[string]string{"T_COUNT": "1.5", "T_WAIT": "soon", "T_VERBOSE": "nope", "T_NAME": "fine"}, nil,
			[]string{`T_COUNT="1.5"`, `T_WAIT="soon"`, `T_VERBOSE="nope"`},
			settings{Name: "fine", Count: 1, Wait: time.Second, Verbose: false}},
		{"reported even when a flag overrides", map[string]string{"T_COUNT": "x"}, []string{"-count=5"},
			[]string{`T_COUNT="x"`}, settings{Name: "def", Count: 5, Wait: time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, s := parse(t, tt.env, tt.args)
			err := s.Err()
			if err == nil {
				t.Fatalf("Err() = nil, want an error naming %v", tt.wantVars)
			}
			for _, v := range tt.wantVars {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("Err() = %q, want it to contain %s", err, v)
				}
			}
			if got, want := len(strings.Split(err.Error(), "\n")), len(tt.wantVars); got != want {
				t.Errorf("Err() = %q has %d lines, want %d", err, got, want)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parsed settings mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFlagOnly(t *testing.T) {
	t.Parallel()
	var lookups []string
	getenv := func(k string) string {
		lookups = append(lookups, k)
		return "from-env"
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := New(fs, getenv)
	var (
		name string
		n    int
		d    time.Duration
		b    bool
	)
	s.String(&name, "name", "", "def", "flag-only name")
	s.Int(&n, "n", "", 3, "flag-only int")
	s.Duration(&d, "d", "", time.Minute, "flag-only duration")
	s.Bool(&b, "b", "", true, "flag-only bool")
	if err := fs.Parse(nil); err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if name != "def" || n != 3 || d != time.Minute || !b {
		t.Errorf("flag-only values = %q, %d, %v, %v, want \"def\", 3, 1m0s, true", name, n, d, b)
	}
	if len(lookups) != 0 {
		t.Errorf("getenv called with %q, want no calls for empty env names", lookups)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
	if got := fs.Lookup("name").Usage; got != "flag-only name" {
		t.Errorf("usage of a flag-only flag = %q, want %q", got, "flag-only name")
	}
	if err := fs.Parse([]string{"-name=x", "-n=4"}); err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if name != "x" || n != 4 {
		t.Errorf("flag-only values after flags = %q, %d, want \"x\", 4", name, n)
	}
}

func TestUsageNamesEnv(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	s := New(fs, func(string) string { return "" })
	var addr string
	s.String(&addr, "addr", "SCALELAB_ADDR", ":5004", "HTTP address")
	if got, want := fs.Lookup("addr").Usage, "HTTP address (env SCALELAB_ADDR)"; got != want {
		t.Errorf("usage = %q, want %q", got, want)
	}
	if got, want := fs.Lookup("addr").DefValue, ":5004"; got != want {
		t.Errorf("default = %q, want %q", got, want)
	}
}

func TestNilGetenv(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	s := New(fs, nil)
	var n int
	s.Int(&n, "n", "T_N", 9, "n")
	if err := fs.Parse(nil); err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if n != 9 {
		t.Errorf("value with nil Getenv = %d, want 9", n)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
}
