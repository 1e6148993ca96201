package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
)

// Options are the connection settings shared by every role.
type Options struct {
	URL  string // comma-separated server URLs
	Name string // connection name, shown by the server's /connz (and `nats server report connections` as a system user)
	// User and Password, when set, authenticate the connection, and its
	// replies arrive under InboxPrefix(User) instead of _INBOX.
	User, Password string
	// InProcess, when set, is a server running in this process (`scalelab
	// up`'s embedded one): the connection is an in-memory pipe to it
	// instead of a TCP socket to URL. Everything else is the same (the
	// server authenticates and authorizes it like any client), but no
	// message costs a system call: with loopback TCP, system calls were a
	// third of `up`'s CPU time under load, and in-process pipes cut them
	// from 28.6 to 15.7 per task (bench/tasks). URL still names the
	// server in logs.
	InProcess nats.InProcessConnProvider
}

// InboxPrefix returns the reply-subject prefix of a connection that
// authenticates as user: "_INBOX.<user>". Each scalelab NATS user may
// subscribe only under its own prefix (natsconf/permissions.go), so one
// role cannot read the replies another receives (KV values, password
// hashes) by subscribing to _INBOX.>, while a server that allows
// _INBOX.> still works.
func InboxPrefix(user string) string { return "_INBOX." + user }

// Validate checks that User can be a subject token (it is part of the
// inbox prefix) and that a password comes with a user.
func (o Options) Validate() error {
	var errs []error
	if strings.ContainsFunc(o.User, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		errs = append(errs, fmt.Errorf("nats user %q: letters, digits, - and _ only", o.User))
	}
	if o.User == "" && o.Password != "" {
		errs = append(errs, errors.New("nats password given without a user"))
	}
	if o.User != "" && o.Password == "" {
		errs = append(errs, fmt.Errorf("nats user %s has no password", o.User))
	}
	return errors.Join(errs...)
}

// Connect dials NATS, retrying until it succeeds or ctx is done, and returns a
// connection that reconnects forever. It returns ctx's error if ctx ends
// first, and at once o.Validate's error or nats.ErrAuthorization when the
// server refuses the credentials.
func Connect(ctx context.Context, o Options, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(2 * time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password), nats.CustomInboxPrefix(InboxPrefix(o.User)))
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	backoff := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(o.URL, opts...)
		if err == nil {
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "name", o.Name)
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) {
			// The server is up and refuses these credentials: waiting
			// will not change that, and the operator should know now.
			return nil, fmt.Errorf("connect to nats %s as %q: %w", o.URL, o.User, err)
		}
		log.Warn("nats not reachable yet, retrying", "url", o.URL, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats %s: %w", o.URL, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// Retry calls fn until it returns nil or ctx is done, backing off between
// attempts. It is for start-up steps such as provisioning streams, which fail
// while a JetStream cluster is still electing its leader.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Warn("retrying", "what", what, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// RequestError translates a failed request to service (a name for
// clients, such as "database service") into an *apperr.Error when the cause
// is that the service cannot be reached: no responders, a timeout, a
// cancelled request or a lost connection all mean Unavailable, which HTTP
// answers with 503. Other errors are wrapped as they are.
func RequestError(service string, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return apperr.Wrap(err, apperr.Unavailable, "%s is not available", service)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return apperr.Wrap(err, apperr.Unavailable, "%s did not answer in time", service)
	case errors.Is(err, context.Canceled):
		return apperr.Wrap(err, apperr.Unavailable, "request to %s was cancelled", service)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrInvalidConnection):
		return apperr.Wrap(err, apperr.Unavailable, "message bus is not connected")
	default:
		return fmt.Errorf("request %s: %w", service, err)
	}
}

// Close drains nc (pending publishes are flushed, subscriptions finish
// their in-flight messages) and waits until it is closed or timeout passes.
func Close(nc *nats.Conn, timeout time.Duration) error {
	if nc == nil || nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain nats connection: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return fmt.Errorf("drain nats connection: not closed after %v", timeout)
	}
}
