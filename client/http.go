package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
)

// HTTPClient submits and follows tasks over the platform's HTTP API. It is
// safe for concurrent use.
type HTTPClient struct {
	base  string
	token string
	hc    *http.Client
	poll  time.Duration
}

// Option sets an option of New.
type Option func(*HTTPClient)

// WithHTTPClient sends the requests with hc instead of a client of its
// own (whose requests time out after a minute).
func WithHTTPClient(hc *http.Client) Option { return func(c *HTTPClient) { c.hc = hc } }

// WithPollWait sets how long each of Wait's requests waits for the task
// to finish (GET /tasks/{id}?wait=): 25 s by default, the gateway's most.
func WithPollWait(d time.Duration) Option { return func(c *HTTPClient) { c.poll = d } }

// maxPollWait is the gateway's longest ?wait=.
const maxPollWait = 25 * time.Second

// New returns a client of the API at baseURL (the balancer, e.g.
// http://127.0.0.1:8000, or a gateway) that authenticates with token, a
// JWT (`scalelab token`, POST /auth/token, or the dev token `up` prints).
func New(baseURL, token string, opts ...Option) *HTTPClient {
	c := &HTTPClient{
		base: strings.TrimRight(baseURL, "/"), token: token,
		hc: &http.Client{Timeout: time.Minute}, poll: maxPollWait,
	}
	for _, o := range opts {
		o(c)
	}
	c.poll = min(max(c.poll, time.Millisecond), maxPollWait)
	return c
}

var _ Tasks = (*HTTPClient)(nil)

// Submit posts the task to /longtask (see Tasks). With
// WithIdempotencyKey, a repeat returns the first task.
func (c *HTTPClient) Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Task, error) {
	body, o, err := submissionBody(typ, payload, opts)
	if err != nil {
		return nil, err
	}
	header := http.Header{"Content-Type": {"application/json"}}
	if o.idempotencyKey != "" {
		header.Set("Idempotency-Key", o.idempotencyKey)
	}
	var accepted struct {
		TaskID string `json:"task_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/longtask", header, body, &accepted); err != nil {
		return nil, err
	}
	if accepted.TaskID == "" {
		return nil, fmt.Errorf("client: POST /longtask answered no task_id")
	}
	return &Task{ID: accepted.TaskID, Type: typ, Queue: o.queue, State: Queued}, nil
}

// Get reads GET /tasks/{id}.
func (c *HTTPClient) Get(ctx context.Context, id string) (*Task, error) {
	var t Task
	if err := c.do(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// Wait long-polls GET /tasks/{id}?wait= until the task is final: one
// request per WithPollWait (25 s), each answered as soon as the task
// finishes.
func (c *HTTPClient) Wait(ctx context.Context, id string) (*Task, error) {
	path := "/tasks/" + url.PathEscape(id) + "?wait=" + url.QueryEscape(c.poll.String())
	var last *Task
	for {
		var t Task
		if err := c.do(ctx, http.MethodGet, path, nil, nil, &t); err != nil {
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = &t
		if t.State.Final() {
			return last, nil
		}
		if err := ctx.Err(); err != nil {
			return last, err
		}
	}
}

// Cancel sends DELETE /tasks/{id}.
func (c *HTTPClient) Cancel(ctx context.Context, id string) (*Task, error) {
	var t Task
	if err := c.do(ctx, http.MethodDelete, "/tasks/"+url.PathEscape(id), nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// maxBody bounds what the client reads of an answer.
const maxBody = 8 << 20

// do sends one request and decodes a 2xx answer into out; any other answer
// is a *Error.
func (c *HTTPClient) do(ctx context.Context, method, path string, header http.Header, body []byte, out any) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("client: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(resp, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// apiError is the *Error of a non-2xx answer: its JSON error body, or,
// for one without (a proxy's page), the status and the start of the body.
func apiError(resp *http.Response, body []byte) *Error {
	var e struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		return &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, RequestID: e.Error.RequestID}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Code: string(apperr.CodeForStatus(resp.StatusCode)), Message: msg,
		RequestID: resp.Header.Get("X-Request-ID")}
}

// ListOptions select and page the tasks HTTPClient.List returns; a zero
// field selects any. (NATSClient.List takes a Filter instead: it scans
// the bucket, with no pages.)
type ListOptions struct {
	// State, Type and Queue narrow the list to tasks in that state, of
	// that registered type, on that registered queue: an unknown type or
	// queue is a 400 (Code "invalid").
	State State
	Type  string
	Queue string
	// Owner narrows the list to one owner's tasks; it needs a token with
	// tasks:admin (403 otherwise). Without tasks:admin a token lists only
	// its own subject's tasks.
	Owner string
	// Limit is the most tasks of one page, 1 to 200: 50 when 0.
	Limit int
	// Cursor is the Page.NextCursor of the page before; "" for the first.
	Cursor string
}

// Page is one page of GET /tasks: its tasks, newest first, and where the
// next one starts.
type Page struct {
	// Tasks are the page's tasks as the listing summarizes them: ID,
	// Type, Queue, State, Attempts, Progress, Error, Owner and the times,
	// not the payload or the result (Get reads the whole record).
	Tasks []*Task `json:"tasks"`
	// NextCursor is the ListOptions.Cursor of the next page, "" on the
	// last one.
	NextCursor string `json:"next_cursor,omitempty"`
	// Totals count the tasks the caller may list that match the
	// options' Type, Queue and Owner, by state, whatever the State asked
	// for; the key "all" is their sum.
	Totals map[State]int `json:"totals"`
}

// List reads one page of GET /tasks: the caller's own tasks, or everyone's
// with a tasks:admin token, newest first. Follow Page.NextCursor for the
// next page. Right after a gateway starts, while it loads its index, the
// answer is a 503 (Code "unavailable"): retry it a little later.
func (c *HTTPClient) List(ctx context.Context, opts ListOptions) (*Page, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("state", string(opts.State))
	set("type", opts.Type)
	set("queue", opts.Queue)
	set("owner", opts.Owner)
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	set("cursor", opts.Cursor)
	path := "/tasks"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var p Page
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Retry sends POST /tasks/{id}/retry: a failed, dead or cancelled task is
// queued again with a fresh budget of attempts (a dead task's dead letter
// goes away), and Retry returns its record, queued, with Generation one
// up. A task in another state is a 409 (Code "conflict"); another
// subject's task is a 404, unless the token has tasks:admin.
func (c *HTTPClient) Retry(ctx context.Context, id string) (*Task, error) {
	var t Task
	if err := c.do(ctx, http.MethodPost, "/tasks/"+url.PathEscape(id)+"/retry", nil, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}
