package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/worker"
)

// Cache is the read-through cache of the cached routes (*cache.Cache).
type Cache interface {
	Get(ctx context.Context, key string, load cache.Loader) (cache.Result, error)
	// Invalidate returns once no gateway serves the keys' old values.
	Invalidate(ctx context.Context, keys ...string) error
}

// Database is dbsvc as the gateway uses it (*dbsvc.Client).
type Database interface {
	// Data runs the expensive report behind /data.
	Data(ctx context.Context, requestID string) (json.RawMessage, error)
	ItemJSON(ctx context.Context, requestID string, id int64) (json.RawMessage, error)
	ListItems(ctx context.Context, requestID string, afterID int64, limit int) (dbsvc.ItemPage, error)
	// A create with a key (not the zero CreateKey) is repeatable.
	CreateItem(ctx context.Context, requestID string, u dbsvc.ItemUpdate, key dbsvc.CreateKey) (dbsvc.CreatedItem, error)
	// The writes of an existing item take If-Match's versions (none: any).
	UpdateItem(ctx context.Context, requestID string, id int64, u dbsvc.ItemUpdate, ifMatch ...int64) (dbsvc.Item, error)
	PatchItem(ctx context.Context, requestID string, id int64, p dbsvc.ItemFields, ifMatch ...int64) (dbsvc.Item, error)
	DeleteItem(ctx context.Context, requestID string, id int64, ifMatch ...int64) error
	UserStore // POST /auth/token
}

// Processor calls the sync business logic (worker.ProcessClient).
type Processor interface {
	Process(ctx context.Context, requestID string) (worker.ProcessReply, error)
}

// TaskStore holds task records (task.Store).
type TaskStore interface {
	Create(ctx context.Context, rec *task.Record) (uint64, error)
	Get(ctx context.Context, id string) (*task.Record, uint64, error)
	Update(ctx context.Context, id string, fn func(*task.Record) error) (*task.Record, error)
	Delete(ctx context.Context, id string) error
}

// Notifier publishes core NATS notices (*nats.Conn).
type Notifier interface {
	Publish(subject string, data []byte) error
}

// TaskQueue enqueues tasks for the workers, at once or, with a non-zero
// runAt, when that time comes.
type TaskQueue interface {
	Enqueue(ctx context.Context, env task.Envelope, requestID string, runAt time.Time) error
}

// dataCacheKey is the cache key of /data's result. The version segment lets
// a change of the value's shape start from an empty cache.
const dataCacheKey = "data.v1"

// handleGetData is the lab's cached endpoint: {"cached":bool,"data":<the
// report>}, read through the cache tiers (see package cache). A cache that
// is down is skipped, never an error: the database is the source of truth.
func handleGetData(c Cache, db Database) echo.HandlerFunc {
	return func(ec echo.Context) error {
		rid := requestID(ec)
		res, err := c.Get(ec.Request().Context(), dataCacheKey, func(ctx context.Context) ([]byte, error) {
			return db.Data(ctx, rid)
		})
		if err != nil {
			return err
		}
		setCacheHeader(ec, res)
		// The report is already JSON (dbsvc wrote it, the cache holds those
		// bytes), so it is spliced in rather than decoded and encoded again
		// on every hit.
		prefix := dataFreshPrefix
		if res.Cached() {
			prefix = dataCachedPrefix
		}
		data := res.Value
		if res.NotFound {
			data = jsonNull
		}
		return writeJSONParts(ec, http.StatusOK, prefix, data, closeObjectLine)
	}
}

// The parts of GET /data's answer around the report.
var (
	dataFreshPrefix  = []byte(`{"cached":false,"data":`)
	dataCachedPrefix = []byte(`{"cached":true,"data":`)
	jsonNull         = []byte("null")
	closeObjectLine  = []byte("}\n")
	newline          = []byte("\n")
)

// writeJSONParts answers with status and a JSON body made of parts, written
// one after the other into the server's buffer. A cached value goes out
// without first being copied into a new body: on a near-cache hit that
// copy was the largest allocation of the request (about 2 KB for /data).
func writeJSONParts(ec echo.Context, status int, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	resp := ec.Response()
	h := resp.Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	// With the length known, net/http sends it rather than chunking a
	// body written in parts.
	h.Set(echo.HeaderContentLength, strconv.Itoa(n))
	resp.WriteHeader(status)
	for _, p := range parts {
		if _, err := resp.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// cacheHeader tells which tier answered a cached route: local, kv or miss.
const cacheHeader = "X-Cache"

func setCacheHeader(c echo.Context, res cache.Result) {
	v := string(res.Source)
	if res.Source == cache.SourceDB {
		v = "miss"
	}
	c.Response().Header().Set(cacheHeader, v)
}

// handleProcess calls the process service on some worker.
func handleProcess(p Processor) echo.HandlerFunc {
	return func(c echo.Context) error {
		reply, err := p.Process(c.Request().Context(), requestID(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, reply)
	}
}
