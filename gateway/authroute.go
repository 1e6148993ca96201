package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
)

// UserStore looks users up for POST /auth/token (*dbsvc.Client).
type UserStore interface {
	// GetUser returns the user with its bcrypt hash, or an error matching
	// dbsvc.ErrNotFound.
	GetUser(ctx context.Context, requestID, name string) (dbsvc.User, error)
}

// dummyHash is compared against when the user does not exist, so that an
// unknown user costs the same bcrypt work as a wrong password and the two
// cannot be told apart by timing. Its cost is dbsvc.DefaultBcryptCost, the
// cost of `scalelab users add` (checked by a test); a user stored with
// another cost is distinguishable, which only says the user exists. The
// password behind it was random and thrown away.
const dummyHash = "$2a$12$lQpudlhIQD/iKfx109fjweKKtXB2FOcth2GEW/1mNXOSKxw6W4MF2"

// maxPasswordBytes is bcrypt's input limit. bcrypt ignores what follows, so
// a longer password is refused rather than matched on its first 72 bytes.
const maxPasswordBytes = 72

// loginWait is how long a login waits for a bcrypt slot before it is
// answered 503: about one compare at cost 12, so a short burst is
// absorbed while a flood is turned away at once instead of piling up.
const loginWait = 250 * time.Millisecond

// bcryptSlots bounds the bcrypt compares running at once in one gateway.
// bcrypt is deliberately slow (about 250 ms of CPU at cost 12), so without
// a bound a burst of logins, or someone guessing passwords, would take
// every core from the API. Slots is a semaphore: send to acquire, receive
// to release.
type bcryptSlots struct {
	slots chan struct{}
	wait  time.Duration
}

// newBcryptSlots returns 2×GOMAXPROCS slots: enough to keep every core
// busy with logins while the requests that hold a slot are between
// compares, and few enough that the API keeps answering.
func newBcryptSlots() *bcryptSlots {
	return &bcryptSlots{slots: make(chan struct{}, 2*runtime.GOMAXPROCS(0)), wait: loginWait}
}

// acquire takes a slot, waiting at most b.wait. It returns false when none
// came free in time or ctx ended; the caller answers 503 with Retry-After
// rather than queueing without bound.
func (b *bcryptSlots) acquire(ctx context.Context) bool {
	select {
	case b.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(b.wait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (b *bcryptSlots) release() { <-b.slots }

// handleIssueToken is POST /auth/token: it checks a username and password
// against the users in dbsvc and answers a token with the user's scopes,
// valid for ttl and signed with keys. It answers 400 for a bad body, 401
// invalid username or password for an unknown user and a wrong password
// alike, 503 when dbsvc is down or every bcrypt slot stays busy.
func handleIssueToken(users UserStore, keys auth.Keys, ttl time.Duration, log *slog.Logger) echo.HandlerFunc {
	return issueToken(users, keys, ttl, newBcryptSlots(), log)
}

// issueToken is handleIssueToken with the bcrypt slots given, so a test
// can fill them.
func issueToken(users UserStore, keys auth.Keys, ttl time.Duration, slots *bcryptSlots, log *slog.Logger) echo.HandlerFunc {
	type request struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	type response struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	return func(c echo.Context) error {
		var in request
		if err := decodeStrict(c.Request().Body, &in); err != nil {
			return err
		}
		if in.Username == "" || in.Password == "" {
			return apperr.New(apperr.Invalid, `body must be {"username":"...","password":"..."} with both set`)
		}
		ctx := c.Request().Context()
		rid := requestID(c)
		// A name dbsvc would refuse cannot exist: skip the round trip, but
		// not the compare below.
		hash, scopes, known := dummyHash, []string(nil), false
		if dbsvc.ValidateUserName(in.Username) == nil {
			u, err := users.GetUser(ctx, rid, in.Username)
			switch {
			case err == nil:
				hash, scopes, known = u.PasswordHash, u.Scopes, true
			case !errors.Is(err, dbsvc.ErrNotFound):
				return err // unavailable: 503
			}
		}
		if !slots.acquire(ctx) {
			return apperr.New(apperr.Unavailable, "too many logins in progress, try again shortly")
		}
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(in.Password))
		slots.release()
		if known && err != nil && !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			// dbsvc validates hashes on the way in, so this is a damaged row.
			log.Warn("stored password hash is unusable", "user", in.Username, "request_id", rid, "err", err)
		}
		if err != nil || !known || len(in.Password) > maxPasswordBytes {
			// The name only of a user who exists: an unknown "name" may
			// be a password typed into the wrong field.
			user := ""
			if known {
				user = in.Username
			}
			log.Info("login refused", "user", user, "known_user", known, "request_id", rid)
			return apperr.New(apperr.Unauthorized, "invalid username or password")
		}
		tok, exp, err := keys.Issue(in.Username, scopes, ttl, time.Now())
		if err != nil {
			return err // internal: the keys passed Validate at start
		}
		log.Info("token issued", "user", in.Username, "scopes", scopes, "request_id", rid)
		// A token is a credential: no cache may keep it (RFC 6749 5.1).
		c.Response().Header().Set("Cache-Control", "no-store")
		// exp is whole seconds in the token; say the same here.
		return c.JSON(http.StatusOK, response{Token: tok, ExpiresAt: exp.UTC().Truncate(time.Second)})
	}
}
