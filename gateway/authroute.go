package gateway

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/strictjson"
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

// handleIssueToken is POST /auth/token: it checks a username and password
// against the users in dbsvc and answers a token with the user's scopes,
// valid for ttl and signed with keys. It answers 400 for a bad body, 401
// invalid username or password for an unknown user and a wrong password
// alike, 429 with Retry-After while the name or the client address has
// failed too often (limits), 503 when dbsvc is down or every bcrypt slot
// stays busy. keys, ttl, limits and the slots are cfg's JWT, TokenTTL,
// Logins and BcryptSlots.
func handleIssueToken(users UserStore, cfg Config, m *metrics, log *slog.Logger) echo.HandlerFunc {
	dummy := dummyHash
	if cfg.dummyHash != "" {
		dummy = cfg.dummyHash
	}
	h := issueToken(users, cfg.JWT, cfg.TokenTTL, dummy, newBcryptSlots(cfg.BcryptSlots, m.bcrypt), newLoginThrottle(cfg.Logins), log)
	return func(c echo.Context) error {
		err := h(c)
		outcome := "issued"
		switch code := apperr.CodeOf(err); {
		case err == nil:
		case code == apperr.Unauthorized:
			outcome = "refused"
		case code == apperr.RateLimited:
			outcome = "throttled"
		case code == apperr.Unavailable:
			outcome = "unavailable"
		default:
			outcome = "invalid"
		}
		m.logins.WithLabelValues(outcome).Inc()
		return err
	}
}

// issueToken is handleIssueToken with the bcrypt slots and the throttle
// given, so a test can fill them. dummy is the hash an unknown user's
// password is compared against (dummyHash).
func issueToken(users UserStore, keys auth.Keys, ttl time.Duration, dummy string, slots *bcryptSlots, throttle *loginThrottle, log *slog.Logger) echo.HandlerFunc {
	type request struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	type response struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	return func(c echo.Context) error {
		in, err := strictjson.DecodeBody[request](c.Request().Body)
		if err != nil {
			return err
		}
		if in.Username == "" || in.Password == "" {
			return apperr.New(apperr.Invalid, `body must be {"username":"...","password":"..."} with both set`)
		}
		ctx := c.Request().Context()
		rid := requestID(c)
		// The throttle's keys: the client's address (X-Forwarded-For only
		// from a trusted proxy) and the name, unless it is one dbsvc would
		// refuse, which cannot exist and is left to the address's count
		// (the names kept are then short).
		ip, user := c.RealIP(), ""
		validName := dbsvc.ValidateUserName(in.Username) == nil
		if validName {
			user = in.Username
		}
		// Before any database or bcrypt work, so a flood of guesses at a
		// blocked name or from a blocked address costs next to nothing.
		release, wait := throttle.begin(user, throttleAddr(ip), time.Now())
		if release == nil {
			log.Info("login throttled", "user", user, "client_ip", ip, "retry_after", wait.Round(time.Second), "request_id", rid)
			return limitedLogin(c, wait)
		}
		defer release()
		// A name dbsvc would refuse cannot exist: skip the round trip, but
		// not the compare below.
		hash, scopes, known := dummy, []string(nil), false
		if validName {
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
		err = bcrypt.CompareHashAndPassword([]byte(hash), []byte(in.Password))
		slots.release()
		if known && err != nil && !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			// dbsvc validates hashes on the way in, so this is a damaged row.
			log.Warn("stored password hash is unusable", "user", in.Username, "request_id", rid, "err", err)
		}
		if err != nil || !known || len(in.Password) > maxPasswordBytes {
			throttle.failed(user, throttleAddr(ip), time.Now())
			// The name only of a user who exists: an unknown "name" may
			// be a password typed into the wrong field.
			logged := ""
			if known {
				logged = in.Username
			}
			log.Info("login refused", "user", logged, "known_user", known, "client_ip", ip, "request_id", rid)
			return apperr.New(apperr.Unauthorized, "invalid username or password")
		}
		throttle.succeeded(user)
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

// limitedLogin is the 429 of the login throttle, with Retry-After in whole
// seconds. The same words whether the name or the address is blocked, and
// whether the name exists.
func limitedLogin(c echo.Context, wait time.Duration) error {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return apperr.New(apperr.RateLimited, "too many failed logins for this user or address; retry in %ds", secs)
}
