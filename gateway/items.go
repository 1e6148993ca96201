package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/strictjson"
)

// itemCacheKey is the cache key of one item. KV keys cannot hold ':', so
// the segments are dotted; v1 is the value's shape (dbsvc.Item as JSON).
func itemCacheKey(id int64) string { return "item.v1." + strconv.FormatInt(id, 10) }

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

// handlePutItem writes an item through dbsvc, then invalidates its cache
// key on every gateway before answering: a read after this returns, through
// whichever gateway, sees the new item.
func handlePutItem(c Cache, db Database, log *slog.Logger) echo.HandlerFunc {
	return func(ec echo.Context) error {
		id, err := parseItemID(ec)
		if err != nil {
			return err
		}
		u, err := strictjson.DecodeBody[dbsvc.ItemUpdate](ec.Request().Body)
		if err != nil {
			return err
		}
		if err := u.Validate(); err != nil {
			return apperr.Wrap(err, apperr.Invalid, "%v", err)
		}
		rid := requestID(ec)
		it, err := db.UpdateItem(ec.Request().Context(), rid, id, u)
		if err != nil {
			return err
		}
		// The report behind /data names items, so it goes too.
		invalidate(ec, c, log, itemCacheKey(id), dataCacheKey)
		return ec.JSON(http.StatusOK, it)
	}
}

// handleDeleteItem deletes an item through dbsvc and invalidates its key.
func handleDeleteItem(c Cache, db Database, log *slog.Logger) echo.HandlerFunc {
	return func(ec echo.Context) error {
		id, err := parseItemID(ec)
		if err != nil {
			return err
		}
		if err := db.DeleteItem(ec.Request().Context(), requestID(ec), id); err != nil {
			return err
		}
		// Deleting an item deletes its sales: the /data report changes.
		invalidate(ec, c, log, itemCacheKey(id), dataCacheKey)
		return ec.NoContent(http.StatusNoContent)
	}
}

// invalidate drops keys from the cache tiers after a write. The write has
// happened whatever this does, so a failure is logged (and counted by the
// cache), not returned: stale reads are then bounded by the KV watch
// (milliseconds) or, with KV down, by the entries' TTL.
func invalidate(ec echo.Context, c Cache, log *slog.Logger, keys ...string) {
	// The client hanging up must not leave the cache half-invalidated.
	ctx := context.WithoutCancel(ec.Request().Context())
	if err := c.Invalidate(ctx, keys...); err != nil {
		log.Warn("cache invalidation incomplete after a write", "keys", keys, "request_id", requestID(ec), "err", err)
	}
}
