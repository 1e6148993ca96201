package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/natsconn"
)

const usersUsage = `Usage:
  scalelab users add <name> [--scope "data:read items:read tasks:read tasks:write"] [--nats URL]
      create the user <name>, or replace its password and scopes. The password is
      read from stdin (one line), or asked for twice without echo on a terminal;
      it must be 12 characters to 72 bytes. Only its bcrypt hash leaves this process.
`

// defaultUserScopes lets a new user read everything and run tasks, but
// not change items: items:write is granted only when asked for.
var defaultUserScopes = strings.Join([]string{auth.ScopeDataRead, auth.ScopeItemsRead, auth.ScopeTasksRead, auth.ScopeTasksWrite}, " ")

// minPasswordChars is the shortest password `users add` accepts, in
// characters.
const minPasswordChars = 12

// maxPasswordBytes is bcrypt's input limit; bcrypt would ignore the rest,
// so a longer password is refused rather than silently cut.
const maxPasswordBytes = 72

// runUsers is `scalelab users add`: it hashes a password with bcrypt and
// stores the user in dbsvc over NATS. It returns a usage error for bad
// arguments, a bad name, scopes or password, and other errors (exit 1)
// when NATS or dbsvc cannot be reached.
func runUsers(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, s := newFlags("scalelab users add", usersUsage, getenv, stderr)
	var c common
	c.register(s, true)
	var scope string
	s.String(&scope, "scope", "", defaultUserScopes, "space-separated scopes of the user's tokens")
	// The default is the cost the gateway's dummy hash for unknown users
	// matches, so that a login cannot tell a user exists by its timing.
	// Lower costs are for tests: under the race detector a hash at the
	// default takes seconds.
	var bcryptCost int
	s.Int(&bcryptCost, "bcrypt-cost", "SCALELAB_BCRYPT_COST", dbsvc.DefaultBcryptCost, fmt.Sprintf("bcrypt cost of the password's hash (%d to %d)", dbsvc.MinBcryptCost, dbsvc.MaxBcryptCost))
	if len(args) == 0 || args[0] != "add" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fs.Usage()
			return nil
		}
		fmt.Fprint(stderr, usersUsage)
		return usageErr(fmt.Errorf("users: unknown subcommand %q", args))
	}
	// Flags may come before or after the name, as in the usage line: the
	// flag package stops at the first argument, so parse again after it.
	var name string
	rest := args[1:]
	for {
		if help, err := parseFlags(fs, rest); help || err != nil {
			return err
		}
		rest = fs.Args()
		if name != "" || len(rest) == 0 {
			break
		}
		name, rest = rest[0], rest[1:]
	}
	if name == "" {
		fmt.Fprint(stderr, usersUsage)
		return usageErr(errors.New("users add: no user name given"))
	}
	if len(rest) > 0 {
		return usageErr(fmt.Errorf("users add: unexpected arguments %q", rest))
	}
	scopes := strings.Fields(scope)
	var errs []error
	if err := dbsvc.ValidateUserName(name); err != nil {
		errs = append(errs, fmt.Errorf("users add: user %w", err))
	}
	if err := dbsvc.ValidateScopes(scopes); err != nil {
		errs = append(errs, fmt.Errorf("users add: --scope: %w", err))
	}
	if bcryptCost < dbsvc.MinBcryptCost || bcryptCost > dbsvc.MaxBcryptCost {
		errs = append(errs, fmt.Errorf("users add: --bcrypt-cost %d: want %d to %d", bcryptCost, dbsvc.MinBcryptCost, dbsvc.MaxBcryptCost))
	}
	if !flagSet(fs, "log-level") && getenv("SCALELAB_LOG_LEVEL") == "" {
		c.LogLevel = "warn" // an operator command: print results, not connection chatter
	}
	log, err := c.logger(stderr)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(append(errs, s.Err())...); err != nil {
		return usageErr(err)
	}

	opts, err := c.natsOptions(getenv, "scalelab-users")
	if err != nil {
		return err
	}
	password, err := readPassword(stdin, stderr, name)
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return fmt.Errorf("users add: hash password: %w", err)
	}

	// An operator command: fail fast rather than wait for NATS forever.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, opts, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	created, err := dbsvc.NewClient(nc).PutUser(ctx, "", dbsvc.UserPut{Name: name, PasswordHash: string(hash), Scopes: scopes})
	if err != nil {
		return fmt.Errorf("users add %s: %w", name, err)
	}
	verb := "updated"
	if created {
		verb = "created"
	}
	fmt.Fprintf(stdout, "user %s %s with scopes %s\n", name, verb, strings.Join(scopes, " "))
	return nil
}

// maxPasswordLine bounds what is read from a non-terminal stdin, so that
// a pipe from /dev/zero fails instead of filling memory.
const maxPasswordLine = 1024

// readPassword reads the password: on a terminal it prompts on stderr
// twice, without echo; otherwise it reads one line, without its line
// ending (LF or CRLF). It returns a usage error for a password that is
// missing, too short, too long, or not repeated identically.
func readPassword(r io.Reader, stderr io.Writer, name string) (string, error) {
	var password string
	if f, ok := r.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		ask := func(prompt string) (string, error) {
			fmt.Fprint(stderr, prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(stderr) // the user's Enter was not echoed
			if err != nil {
				return "", fmt.Errorf("users add: read password: %w", err)
			}
			return string(b), nil
		}
		first, err := ask("Password for " + name + ": ")
		if err != nil {
			return "", err
		}
		if err := checkPassword(first); err != nil {
			return "", err
		}
		again, err := ask("Repeat the password: ")
		if err != nil {
			return "", err
		}
		if again != first {
			return "", usageErr(errors.New("users add: the passwords do not match"))
		}
		password = first
	} else {
		line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLine)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("users add: read password from stdin: %w", err)
		}
		if line == "" {
			return "", usageErr(errors.New("users add: no password on stdin (give it as one line)"))
		}
		password = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	}
	return password, checkPassword(password)
}

// checkPassword refuses passwords that are too short to resist guessing
// or too long for bcrypt.
func checkPassword(p string) error {
	switch {
	case utf8.RuneCountInString(p) < minPasswordChars:
		return usageErr(fmt.Errorf("users add: the password must be at least %d characters", minPasswordChars))
	case len(p) > maxPasswordBytes:
		return usageErr(fmt.Errorf("users add: the password must be at most %d bytes (bcrypt's limit)", maxPasswordBytes))
	}
	return nil
}
