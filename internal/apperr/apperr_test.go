package apperr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// allCodes lists every code with its HTTP status.
var allCodes = []struct {
	code   Code
	status int
}{
	{Invalid, http.StatusBadRequest},
	{Unauthorized, http.StatusUnauthorized},
	{Forbidden, http.StatusForbidden},
	{NotFound, http.StatusNotFound},
	{Conflict, http.StatusConflict},
	{TooLarge, http.StatusRequestEntityTooLarge},
	{Unavailable, http.StatusServiceUnavailable},
	{Internal, http.StatusInternalServerError},
	{RateLimited, http.StatusTooManyRequests},
	{Unsupported, http.StatusMethodNotAllowed},
	{Timeout, http.StatusRequestTimeout},
	{NotAcceptable, http.StatusUnsupportedMediaType},
	{PreconditionFailed, http.StatusPreconditionFailed},
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	seen := map[int]Code{}
	for _, tt := range allCodes {
		t.Run(string(tt.code), func(t *testing.T) {
			t.Parallel()
			if got := Status(tt.code); got != tt.status {
				t.Errorf("Status(%q) = %d, want %d", tt.code, got, tt.status)
			}
			if got := CodeForStatus(tt.status); got != tt.code {
				t.Errorf("CodeForStatus(%d) = %q, want %q", tt.status, got, tt.code)
			}
		})
		if prev, ok := seen[tt.status]; ok {
			t.Errorf("codes %q and %q share status %d", prev, tt.code, tt.status)
		}
		seen[tt.status] = tt.code
	}
}

// TestStoreFullStatus: store_full is the one code that shares its status
// (503, with unavailable), so it is not in allCodes; a library's 503 is
// not known to be a full store, and maps to unavailable.
func TestStoreFullStatus(t *testing.T) {
	t.Parallel()
	if got := Status(StoreFull); got != http.StatusServiceUnavailable {
		t.Errorf("Status(%q) = %d, want %d", StoreFull, got, http.StatusServiceUnavailable)
	}
	if got := CodeForStatus(http.StatusServiceUnavailable); got != Unavailable {
		t.Errorf("CodeForStatus(503) = %q, want %q", got, Unavailable)
	}
}

func TestStatusUnknownCode(t *testing.T) {
	t.Parallel()
	for _, c := range []Code{"", "bogus", "NOT_FOUND"} {
		if got := Status(c); got != http.StatusInternalServerError {
			t.Errorf("Status(%q) = %d, want %d", c, got, http.StatusInternalServerError)
		}
	}
}

func TestCodeForStatusOthers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   Code
	}{
		{http.StatusGatewayTimeout, Unavailable},
		{http.StatusTeapot, Invalid},
		{http.StatusUnprocessableEntity, Invalid},
		{http.StatusGone, Invalid},
		{499, Invalid},
		{http.StatusNotImplemented, Internal},
		{http.StatusOK, Internal},
		{0, Internal},
		{600, Internal},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			if got := CodeForStatus(tt.status); got != tt.want {
				t.Errorf("CodeForStatus(%d) = %q, want %q", tt.status, got, tt.want)
			}
		})
	}
}

func TestErrorAndCodeOf(t *testing.T) {
	t.Parallel()
	cause := errors.New("disk on fire")
	e := Wrap(cause, Unavailable, "db %s is down", "main")
	if got, want := e.Error(), "unavailable: db main is down: disk on fire"; got != want {
		t.Errorf("Wrap().Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, cause) {
		t.Errorf("errors.Is(Wrap(cause), cause) = false, want true")
	}
	if got, want := New(NotFound, "item %d", 7).Error(), "not_found: item 7"; got != want {
		t.Errorf("New().Error() = %q, want %q", got, want)
	}
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"direct", New(Conflict, "x"), Conflict},
		{"wrapped", fmt.Errorf("outer: %w", New(Forbidden, "x")), Forbidden},
		{"joined", errors.Join(errors.New("a"), New(TooLarge, "x")), TooLarge},
		{"plain", errors.New("plain"), Internal},
		{"nil", nil, Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := CodeOf(tt.err); got != tt.want {
				t.Errorf("CodeOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestPublic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		err      error
		wantCode Code
		wantMsg  string
	}{
		{"coded", New(NotFound, "item 7 not found"), NotFound, "item 7 not found"},
		{"coded with cause", Wrap(errors.New("secret dsn"), Unavailable, "db is down"), Unavailable, "db is down"},
		{"wrapped coded", fmt.Errorf("get item: %w", New(Invalid, "bad id")), Invalid, "bad id"},
		{"plain", errors.New("pq: password=hunter2"), Internal, "internal error"},
		{"internal code hides message", New(Internal, "nil pointer in handler.go:42"), Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, msg := Public(tt.err)
			if code != tt.wantCode || msg != tt.wantMsg {
				t.Errorf("Public(%v) = %q, %q, want %q, %q", tt.err, code, msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestWriteHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		requestID  string
		wantStatus int
		wantBody   Body
		notInBody  string
	}{
		{
			name: "not found", err: New(NotFound, "item 7 not found"), requestID: "req-1",
			wantStatus: http.StatusNotFound,
			wantBody:   Body{Error: BodyError{Code: NotFound, Message: "item 7 not found", RequestID: "req-1"}},
		},
		{
			name: "cause is not shown", err: Wrap(errors.New("dial tcp 10.0.0.7:5432"), Unavailable, "db is down"),
			wantStatus: http.StatusServiceUnavailable,
			wantBody:   Body{Error: BodyError{Code: Unavailable, Message: "db is down"}},
			notInBody:  "10.0.0.7",
		},
		{
			name: "no code", err: errors.New("sql: password=hunter2"), requestID: "req-2",
			wantStatus: http.StatusInternalServerError,
			wantBody:   Body{Error: BodyError{Code: Internal, Message: "internal error", RequestID: "req-2"}},
			notInBody:  "hunter2",
		},
		{
			name: "wrapped no code", err: fmt.Errorf("load: %w", errors.New("secret-path /etc/shadow")),
			wantStatus: http.StatusInternalServerError,
			wantBody:   Body{Error: BodyError{Code: Internal, Message: "internal error"}},
			notInBody:  "shadow",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			WriteHTTP(rec, tt.err, tt.requestID)
			if rec.Code != tt.wantStatus {
				t.Errorf("WriteHTTP(%v) status = %d, want %d", tt.err, rec.Code, tt.wantStatus)
			}
			if got, want := rec.Header().Get("Content-Type"), "application/json; charset=utf-8"; got != want {
				t.Errorf("WriteHTTP(%v) Content-Type = %q, want %q", tt.err, got, want)
			}
			if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("WriteHTTP(%v) X-Content-Type-Options = %q, want nosniff", tt.err, got)
			}
			raw := rec.Body.String()
			if tt.notInBody != "" && strings.Contains(raw, tt.notInBody) {
				t.Errorf("WriteHTTP(%v) body = %s, want no %q", tt.err, raw, tt.notInBody)
			}
			// Check the exact shape, not just what Body decodes.
			var shape map[string]map[string]any
			if err := json.Unmarshal([]byte(raw), &shape); err != nil {
				t.Fatalf("WriteHTTP(%v) body %q is not a JSON object of objects: %v", tt.err, raw, err)
			}
			wantShape := map[string]map[string]any{"error": {
				"code":    string(tt.wantBody.Error.Code),
				"message": tt.wantBody.Error.Message,
			}}
			if tt.requestID != "" {
				wantShape["error"]["request_id"] = tt.requestID
			}
			if diff := cmp.Diff(wantShape, shape); diff != "" {
				t.Errorf("WriteHTTP(%v) body mismatch (-want +got):\n%s", tt.err, diff)
			}
		})
	}
}

func TestWriteCode(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	WriteCode(rec, http.StatusBadGateway, Unavailable, "no backend", "r")
	if rec.Code != http.StatusBadGateway {
		t.Errorf("WriteCode() status = %d, want %d", rec.Code, http.StatusBadGateway)
	}
	var got Body
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("WriteCode() body %q: %v", rec.Body, err)
	}
	want := Body{Error: BodyError{Code: Unavailable, Message: "no backend", RequestID: "r"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WriteCode() body mismatch (-want +got):\n%s", diff)
	}
}

func TestFromNATSReply(t *testing.T) {
	t.Parallel()
	withHeaders := func(h map[string]string) *nats.Msg {
		m := nats.NewMsg("reply")
		for k, v := range h {
			m.Header.Set(k, v)
		}
		return m
	}
	tests := []struct {
		name string
		msg  *nats.Msg
		want error
	}{
		{"no header", &nats.Msg{Subject: "reply", Data: []byte(`{"ok":true}`)}, nil},
		{"empty header", withHeaders(nil), nil},
		{"unrelated header", withHeaders(map[string]string{"X-Request-ID": "r"}), nil},
		{"error code and message", withHeaders(map[string]string{
			micro.ErrorCodeHeader: "not_found", micro.ErrorHeader: "item 7 not found",
		}), &Error{Code: NotFound, Message: "item 7 not found"}},
		{"error code only", withHeaders(map[string]string{micro.ErrorCodeHeader: "unavailable"}),
			&Error{Code: Unavailable}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := FromNATSReply(tt.msg)
			if tt.want == nil {
				if got != nil {
					t.Errorf("FromNATSReply() = %v, want nil", got)
				}
				return
			}
			var e *Error
			if !errors.As(got, &e) {
				t.Fatalf("FromNATSReply() = %v, want an *Error", got)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("FromNATSReply() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRespondNATSRoundTrip sends errors through a real micro service and
// rebuilds them on the client side.
func TestRespondNATSRoundTrip(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	errs := map[string]error{
		"coded": New(NotFound, "item 7 not found"),
		"plain": errors.New("db password=hunter2"),
	}
	svc, err := micro.AddService(nc, micro.Config{Name: "apperrtest", Version: "0.0.1"})
	if err != nil {
		t.Fatalf("micro.AddService() = %v", err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = svc.AddEndpoint("fail", micro.HandlerFunc(func(req micro.Request) {
		_ = RespondNATS(req, errs[string(req.Data())])
	}), micro.WithEndpointSubject("apperrtest.fail"))
	if err != nil {
		t.Fatalf("AddEndpoint() = %v", err)
	}
	tests := []struct {
		name string
		want *Error
	}{
		{"coded", &Error{Code: NotFound, Message: "item 7 not found"}},
		{"plain", &Error{Code: Internal, Message: "internal error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg, err := nc.RequestWithContext(requestContext(t), "apperrtest.fail", []byte(tt.name))
			if err != nil {
				t.Fatalf("Request() = %v", err)
			}
			got := FromNATSReply(msg)
			if diff := cmp.Diff(error(tt.want), got); diff != "" {
				t.Errorf("FromNATSReply(RespondNATS(%v)) mismatch (-want +got):\n%s", errs[tt.name], diff)
			}
		})
	}
}

func requestContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startNATS starts an in-process nats-server with JetStream for one test and
// returns a connection to it. Both are closed when the test ends.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	return testutil.Connect(t, testutil.StartNATS(t))
}
