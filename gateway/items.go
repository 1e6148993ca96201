package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/task"
)

// itemCacheKey is the cache key of one item. KV keys cannot hold ':', so
// the segments are dotted; v2 is the value's shape (dbsvc.Item as JSON,
// with its version: a v1 value, which has none, is never read as one).
func itemCacheKey(id int64) string { return "item.v2." + strconv.FormatInt(id, 10) }

// parseItemID reads the :id path parameter: a positive decimal integer.
func parseItemID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.New(apperr.Invalid, "item id must be a positive integer")
	}
	return id, nil
}

// handleGetItem serves one item through the cache tiers. A missing item is
// a 404, cached briefly too, so probing absent ids does not reach the
// database on every request.
func handleGetItem(c Cache, db Database) echo.HandlerFunc {
	return func(ec echo.Context) error {
		id, err := parseItemID(ec)
		if err != nil {
			return err
		}
		rid := requestID(ec)
		res, err := c.Get(ec.Request().Context(), itemCacheKey(id), func(ctx context.Context) ([]byte, error) {
			b, err := db.ItemJSON(ctx, rid, id)
			if errors.Is(err, dbsvc.ErrNotFound) {
				return nil, cache.ErrNotFound
			}
			return b, err
		})
		if err != nil {
			return err
		}
		setCacheHeader(ec, res)
		if res.NotFound {
			return apperr.New(apperr.NotFound, "no item %d", id)
		}
		if tag, ok := itemETag(res.Value); ok {
			ec.Response().Header()[headerETag] = []string{tag}
		}
		return writeJSONParts(ec, http.StatusOK, res.Value, newline)
	}
}

// handleListItems pages through the items by id: ?after_id=N&limit=M. Lists
// are not cached: any write would invalidate every page after it.
func handleListItems(db Database) echo.HandlerFunc {
	return func(ec echo.Context) error {
		after, err := queryInt(ec, "after_id", 0)
		if err != nil {
			return err
		}
		limit, err := queryInt(ec, "limit", 20)
		if err != nil {
			return err
		}
		page, err := db.ListItems(ec.Request().Context(), requestID(ec), after, int(limit))
		if err != nil {
			return err
		}
		return ec.JSON(http.StatusOK, page)
	}
}

// queryInt reads an optional integer query parameter.
func queryInt(c echo.Context, name string, def int64) (int64, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return 0, apperr.New(apperr.Invalid, "%s must be an integer", name)
	}
	return n, nil
}

// The item writes. Each goes to dbsvc, which checks the precondition
// (If-Match) in the write's own transaction, then invalidates the keys the
// write changed on every gateway before answering: a read after the answer,
// through whichever gateway, sees the write.

// handleCreateItem creates an item from a body that holds all of its
// fields: 201 with the item, its Location and ETag.
//
// With an Idempotency-Key the create is repeatable (a retry by the
// balancer after a timeout, or by the client): dbsvc stores the key's
// idempotentID under idKey for the token's subject with the new item, and
// a repeat with the same key and body answers that item as it is now,
// with the same 201, Location and its current ETag, and
// Idempotent-Replayed: true, instead of creating a second one. The same
// key with another body is a 409 (conflict), and once the item was
// deleted a 404; neither writes anything. Bodies are compared in
// canonical form (createKey).
func handleCreateItem(c Cache, db Database, log *slog.Logger, idKey []byte) echo.HandlerFunc {
	return func(ec echo.Context) error {
		var body bytes.Buffer
		u, err := decodeWholeItem(io.TeeReader(ec.Request().Body, &body), "")
		if err != nil {
			return err
		}
		key, err := createKey(ec, idKey, body.Bytes())
		if err != nil {
			return err
		}
		res, err := db.CreateItem(ec.Request().Context(), requestID(ec), u, key)
		if err != nil {
			return err
		}
		// The new id may have been read before (a deleted item's, which
		// SQLite can hand out again) and its absence cached. On a replay
		// too: the first request may have failed after dbsvc created the
		// item, before it got here.
		invalidate(ec, c, log, itemCacheKey(res.ID))
		if res.Replayed {
			ec.Response().Header().Set(replayedHeader, "true")
		}
		ec.Response().Header().Set(echo.HeaderLocation, "/items/"+strconv.FormatInt(res.ID, 10))
		return writeItem(ec, http.StatusCreated, res.Item)
	}
}

// createKey is the dbsvc.CreateKey of a POST /items whose body, as the
// client sent it, is body (decoded): none without an Idempotency-Key;
// else the key's idempotentID for the token's subject (idempotencyID) and
// the SHA-256 of the body's canonical form, so that a repeat that differs
// only in spacing, member order or string escapes is the same body.
func createKey(ec echo.Context, idKey, body []byte) (dbsvc.CreateKey, error) {
	id, err := idempotencyID(ec, idKey, claimsOf(ec).Subject)
	if err != nil || id == "" {
		return dbsvc.CreateKey{}, err
	}
	canon, err := strictjson.Canonical(body)
	if err != nil {
		return dbsvc.CreateKey{}, err // the body decoded: a bug
	}
	sum := sha256.Sum256(canon)
	return dbsvc.CreateKey{Key: id, BodyHash: hex.EncodeToString(sum[:])}, nil
}

// handlePutItem replaces an item with a body that holds all of its fields:
// a partial body is refused, never taken as zeros.
func handlePutItem(c Cache, db Database, log *slog.Logger) echo.HandlerFunc {
	return handleItemWrite(c, log, func(ec echo.Context) (dbsvc.ItemUpdate, error) {
		return decodeWholeItem(ec.Request().Body,
			"; PUT replaces the whole item, PATCH with Content-Type "+mergePatchType+" changes some fields")
	}, db.UpdateItem)
}

// mergePatchType is the media type of a JSON Merge Patch (RFC 7396), the
// only body PATCH /items/{id} takes.
const mergePatchType = "application/merge-patch+json"

// handlePatchItem applies a JSON Merge Patch to an item: the members it
// has replace the item's fields, the others are kept. dbsvc merges them in
// one transaction, so two patches of different fields both land.
func handlePatchItem(c Cache, db Database, log *slog.Logger) echo.HandlerFunc {
	return handleItemWrite(c, log, func(ec echo.Context) (dbsvc.ItemFields, error) {
		if mt, _, err := mime.ParseMediaType(ec.Request().Header.Get(echo.HeaderContentType)); err != nil || mt != mergePatchType {
			// RFC 5789: say which patch format the resource takes.
			ec.Response().Header().Set("Accept-Patch", mergePatchType)
			return dbsvc.ItemFields{}, apperr.New(apperr.NotAcceptable, "PATCH takes a JSON Merge Patch: Content-Type must be %s", mergePatchType)
		}
		return decodeMergePatch(ec.Request().Body)
	}, db.PatchItem)
}

// handleItemWrite is the handler of a write of an existing item whose
// body decode reads (PUT, PATCH): write sends it to dbsvc with the item's
// id and If-Match, and the answer is the item as written, once both keys
// it changed are invalidated.
func handleItemWrite[In any](c Cache, log *slog.Logger, decode func(echo.Context) (In, error),
	write func(ctx context.Context, requestID string, id int64, in In, ifMatch ...int64) (dbsvc.Item, error)) echo.HandlerFunc {
	return func(ec echo.Context) error {
		id, err := parseItemID(ec)
		if err != nil {
			return err
		}
		in, err := decode(ec)
		if err != nil {
			return err
		}
		it, err := write(ec.Request().Context(), requestID(ec), id, in, ifMatch(ec)...)
		if err != nil {
			return err
		}
		// The report behind /data names items, so it goes too.
		invalidate(ec, c, log, itemCacheKey(id), dataCacheKey)
		return writeItem(ec, http.StatusOK, it)
	}
}

// handleDeleteItem deletes an item through dbsvc and invalidates its key.
func handleDeleteItem(c Cache, db Database, log *slog.Logger) echo.HandlerFunc {
	return func(ec echo.Context) error {
		id, err := parseItemID(ec)
		if err != nil {
			return err
		}
		if err := db.DeleteItem(ec.Request().Context(), requestID(ec), id, ifMatch(ec)...); err != nil {
			return err
		}
		// Deleting an item deletes its sales: the /data report changes.
		invalidate(ec, c, log, itemCacheKey(id), dataCacheKey)
		return ec.NoContent(http.StatusNoContent)
	}
}

// decodeWholeItem reads a body that must hold every field of an item
// (POST and PUT), each in range. The invalid error says which field and
// why, with hint appended.
func decodeWholeItem(body io.Reader, hint string) (dbsvc.ItemUpdate, error) {
	f, err := strictjson.DecodeBody[dbsvc.ItemFields](body)
	if err != nil {
		return dbsvc.ItemUpdate{}, err
	}
	u, err := f.Complete()
	if err != nil {
		return dbsvc.ItemUpdate{}, apperr.Wrap(err, apperr.Invalid, "%v%s", err, hint)
	}
	return u, nil
}

// decodeMergePatch reads an item's JSON Merge Patch (RFC 7396): an object
// whose members replace the item's fields. It must be an object (a patch
// that is not one would replace the whole item with it), name only the
// item's fields, and set none of them to null, which would remove it: an
// item has no optional fields. The fields it sets must be in range.
func decodeMergePatch(body io.Reader) (dbsvc.ItemFields, error) {
	raw, err := strictjson.DecodeBody[json.RawMessage](body)
	if err != nil {
		return dbsvc.ItemFields{}, err
	}
	if !bytes.HasPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte("{")) {
		return dbsvc.ItemFields{}, apperr.New(apperr.Invalid,
			`a merge patch must be a JSON object of the fields to change, such as {"stock":3}`)
	}
	// Known fields and their types, as for PUT. A null decodes as absent
	// here: the members below tell the two apart.
	p, err := strictjson.DecodeBody[dbsvc.ItemFields](bytes.NewReader(raw))
	if err != nil {
		return dbsvc.ItemFields{}, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return dbsvc.ItemFields{}, err // raw is an object that decoded above: a bug
	}
	var nulls []string
	for name, v := range members {
		if string(v) == "null" {
			nulls = append(nulls, strconv.Quote(name))
		}
	}
	if len(nulls) > 0 {
		slices.Sort(nulls)
		return dbsvc.ItemFields{}, apperr.New(apperr.Invalid,
			"null removes a field in a merge patch, and an item's fields are all required: %s (leave a field out to keep it)",
			strings.Join(nulls, ", "))
	}
	if err := p.Validate(); err != nil {
		return dbsvc.ItemFields{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	return p, nil
}

// headerETag is ETag in the canonical form Go keeps header names in, for
// the cached read to set without canonicalizing it on every request.
const headerETag = "Etag"

// etag is the strong entity tag of an item at version v.
func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// writeItem answers with it and its ETag.
func writeItem(ec echo.Context, status int, it dbsvc.Item) error {
	ec.Response().Header()[headerETag] = []string{etag(it.Version)}
	return ec.JSON(status, it)
}

// versionMember is the key of Item.Version in an item's JSON.
var versionMember = []byte(`"version":`)

// itemETag returns the ETag of an item as dbsvc encoded it and the caches
// hold it, read from its version member without decoding the rest: this
// runs on every cached read. The member can only be the key: within a JSON
// string the quote after version would be escaped. A value without it
// (written by hand into the cache) has no ETag.
func itemETag(item []byte) (string, bool) {
	i := bytes.Index(item, versionMember)
	if i < 0 {
		return "", false
	}
	rest := bytes.TrimLeft(item[i+len(versionMember):], " \t\r\n")
	n := 0
	for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
		n++
	}
	if n == 0 {
		return "", false
	}
	return `"` + string(rest[:n]) + `"`, true
}

// ifMatch reads the request's If-Match as the versions the item may have
// for the write to happen: none (no header, or *, which any existing item
// matches) leaves the write unconditional. An entity tag that no version
// has (a weak one, which If-Match's strong comparison never matches, or a
// malformed one) becomes version 0, which no item has: the write then
// fails with 412, as for a stale tag.
func ifMatch(ec echo.Context) []int64 {
	values := ec.Request().Header.Values("If-Match")
	if len(values) == 0 {
		return nil
	}
	var versions []int64
	for _, v := range values {
		for tag := range strings.SplitSeq(v, ",") {
			tag = strings.TrimSpace(tag)
			switch {
			case tag == "":
				continue // an empty list element (RFC 9110 5.6.1)
			case tag == "*":
				return nil
			}
			versions = append(versions, tagVersion(tag))
		}
	}
	if len(versions) == 0 {
		return []int64{0} // only commas: malformed
	}
	return versions
}

// tagVersion returns the version a strong entity tag of etag's form names,
// or 0.
func tagVersion(tag string) int64 {
	inner, ok := strings.CutPrefix(tag, `"`)
	if !ok {
		return 0
	}
	inner, ok = strings.CutSuffix(inner, `"`)
	// Byte for byte what etag writes (strong comparison): digits, no sign,
	// no leading zero.
	if !ok || inner == "" || inner[0] < '1' || inner[0] > '9' {
		return 0
	}
	v, err := strconv.ParseInt(inner, 10, 64)
	if err != nil || v < 1 {
		return 0
	}
	return v
}

// invalidate drops keys from the cache tiers after a write, before the
// write is answered: a read that follows the answer must not find the old
// value (read-your-writes, through any gateway). While the bucket cannot
// take the deletion (its stream electing a leader after a NATS node died:
// seconds), or while a gateway it knows of has not confirmed dropping the
// key from its near-cache (a dead one leaves the peer view within seconds;
// a live one whose KV watch lags would serve the old value from it), it
// tries again for up to invalidateFor. The write has happened whatever
// this does, so a failure after that is logged (and counted by the cache),
// not returned: stale reads are then bounded by the KV watch or, with KV
// down, by the entries' TTL. The chaos run of issue #30 saw PUTs answered while the deletion had
// failed, or a gateway had not confirmed, and the next GET read the value
// they had replaced. A deletion the store refuses for want of space is not
// tried again.
func invalidate(ec echo.Context, c Cache, log *slog.Logger, keys ...string) {
	// The client hanging up must not leave the cache half-invalidated.
	ctx := context.WithoutCancel(ec.Request().Context())
	deadline := time.Now().Add(invalidateFor)
	for {
		err := c.Invalidate(ctx, keys...)
		if err == nil {
			return
		}
		// A full JetStream store refuses the deletion until space
		// returns, minutes perhaps: no retry helps, and each would hold
		// the write 10 s (When the disk fills, README). The near-caches
		// were told over core NATS; the bucket's copy lives out its TTL.
		if time.Now().After(deadline) || task.NoSpace(err) {
			log.Warn("cache invalidation incomplete after a write", "keys", keys, "request_id", requestID(ec), "err", err)
			return
		}
		time.Sleep(invalidateRetryPause) // the bucket's or the peers' recovery, not a wait for a test
	}
}

// invalidateFor bounds invalidate's tries; invalidateRetryPause is the
// pause between two.
const (
	invalidateFor        = 10 * time.Second
	invalidateRetryPause = 200 * time.Millisecond
)
