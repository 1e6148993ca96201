package gateway

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// GET /tasks: the caller's tasks (every task with tasks:admin), newest
// first, a page at a time, with totals per state. Served from the task
// index (taskindex.go).

// indexFirstWait is how long a listing or stream waits for an index
// that is loading (the first use after a quiet spell starts it) before it
// answers 503: a small bucket loads within it.
const indexFirstWait = 3 * time.Second

// List limits.
const (
	defaultListLimit = 50
	maxListLimit     = 200
)

// listResponse is the body of GET /tasks.
type listResponse struct {
	Tasks      []taskSummary  `json:"tasks"`
	NextCursor string         `json:"next_cursor,omitempty"`
	Totals     map[string]int `json:"totals"`
}

// handleListTasks answers GET /tasks.
func handleListTasks(idx *taskIndex, catalog *task.Catalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		if idx == nil {
			return indexLoading()
		}
		claims := claimsOf(c)
		f, err := parseListFilter(c, catalog, claims, "state", "type", "queue", "owner", "limit", "cursor")
		if err != nil {
			return err
		}
		q := listQuery{owner: f.owner, state: f.state, typ: f.typ, queue: f.queue, limit: defaultListLimit}
		if s := c.QueryParam("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxListLimit {
				return apperr.New(apperr.Invalid, "limit must be a whole number from 1 to %d", maxListLimit)
			}
			q.limit = n
		}
		if s := c.QueryParam("cursor"); s != "" {
			if q.after, err = decodeCursor(s, f); err != nil {
				return err
			}
		}
		if !idx.awaitLoaded(c.Request().Context(), indexFirstWait) {
			return indexLoading()
		}
		page, err := idx.list(q)
		if err != nil {
			return indexLoading()
		}
		out := listResponse{Tasks: page.tasks, Totals: make(map[string]int, len(slotStates)+1)}
		if out.Tasks == nil {
			out.Tasks = []taskSummary{} // [], not null: a page with nothing on it
		}
		all := 0
		for i, s := range slotStates {
			out.Totals[string(s)] = page.totals[i]
			all += page.totals[i]
		}
		out.Totals["all"] = all
		if page.next != nil {
			out.NextCursor = encodeCursor(page.next, f)
		}
		return c.JSON(http.StatusOK, out)
	}
}

// indexLoading is the 503 of a listing asked for while the gateway reads
// the bucket at start.
func indexLoading() error {
	return apperr.Wrap(errIndexLoading, apperr.Unavailable, "the task index is loading; try again in a moment")
}

// parseListFilter reads the filters of GET /tasks and GET /tasks/events,
// refusing any query parameter but allowed: a misspelt filter would
// otherwise list everything. A state that does not exist, or a type or
// queue that is not registered, is a 400 that says so.
func parseListFilter(c echo.Context, catalog *task.Catalog, claims *auth.Claims, allowed ...string) (listFilter, error) {
	var f listFilter
	params := c.QueryParams()
	for name, vs := range params {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return f, apperr.New(apperr.Invalid, "unknown query parameter %q (this route takes %v)", task.Truncate(name, 40), allowed)
		}
		if len(vs) > 1 {
			return f, apperr.New(apperr.Invalid, "query parameter %q is given %d times", name, len(vs))
		}
	}
	if s := params.Get("state"); s != "" {
		if _, ok := stateSlot[task.State(s)]; !ok {
			return f, apperr.New(apperr.Invalid, "state must be one of %v", slotStates)
		}
		f.state = task.State(s)
	}
	ctx := c.Request().Context()
	for _, p := range []struct {
		name string
		has  func(context.Context, string) (bool, error)
		into *string
		list string
	}{{"type", catalog.HasType, &f.typ, "GET /task-types"}, {"queue", catalog.HasQueue, &f.queue, "GET /queues"}} {
		v := params.Get(p.name)
		if v == "" {
			continue
		}
		if !task.ValidName(v) {
			return f, apperr.New(apperr.Invalid, "%s must be 1-%d letters, digits, '_' or '-'", p.name, task.MaxNameLen)
		}
		ok, err := p.has(ctx, v)
		if err != nil {
			return f, apperr.Wrap(err, apperr.Unavailable, "the task registry is not available")
		}
		if !ok {
			return f, apperr.New(apperr.Invalid, "no %s %q is registered (%s lists them)", p.name, v, p.list)
		}
		*p.into = v
	}
	owner, err := ownerFilter(claims, params.Get("owner"))
	if err != nil {
		return f, err
	}
	f.owner = owner
	return f, nil
}

// Cursors: version byte, the filter's hash (a cursor of another listing
// is refused rather than read as a position in this one), the position's
// created_at (Unix ns) and id. Not secret and not signed: it only says
// where to resume a listing the caller may read anyway.
const cursorVersion = 1

func filterHash(f listFilter) uint64 {
	h := fnv.New64a()
	for _, s := range []string{f.owner, string(f.state), f.typ, f.queue} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func encodeCursor(at *indexEntry, f listFilter) string {
	b := make([]byte, 0, 17+len(at.id))
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, filterHash(f))
	b = binary.BigEndian.AppendUint64(b, uint64(at.created))
	b = append(b, at.id...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string, f listFilter) (*indexEntry, error) {
	bad := apperr.New(apperr.Invalid, "cursor is not one this listing gave (use next_cursor as it came, with the same filters)")
	if len(s) > 200 {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 18 || b[0] != cursorVersion {
		return nil, bad
	}
	if binary.BigEndian.Uint64(b[1:9]) != filterHash(f) {
		return nil, apperr.New(apperr.Invalid, "cursor belongs to a listing with other filters")
	}
	id := string(b[17:])
	if !task.ValidID(id) {
		return nil, bad
	}
	return &indexEntry{created: int64(binary.BigEndian.Uint64(b[9:17])), id: id}, nil
}
