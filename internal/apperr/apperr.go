package apperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Code is a stable, snake_case error code shared by every role.
type Code string

// The codes a client may see. Their HTTP statuses are given by Status.
const (
	Invalid       Code = "invalid"        // the request is malformed: 400
	Unauthorized  Code = "unauthorized"   // no or bad credentials: 401
	Forbidden     Code = "forbidden"      // credentials lack a permission: 403
	NotFound      Code = "not_found"      // the thing asked for does not exist: 404
	Conflict      Code = "conflict"       // the request conflicts with current state: 409
	TooLarge      Code = "too_large"      // the request body is over the limit: 413
	Unavailable   Code = "unavailable"    // a dependency is down or did not answer: 503
	Internal      Code = "internal"       // a bug or an unexpected failure: 500
	RateLimited   Code = "rate_limited"   // too many requests: 429
	Unsupported   Code = "unsupported"    // method not allowed on this path: 405
	Timeout       Code = "timeout"        // the server gave up waiting on the client: 408
	NotAcceptable Code = "not_acceptable" // unsupported media type: 415
	// PreconditionFailed: a conditional write (If-Match) named a version
	// the resource no longer has, so nothing was written: 412.
	PreconditionFailed Code = "precondition_failed"
	// StoreFull: a write was refused because the storage behind it (the
	// JetStream store, the tasks bucket, the SQLite file) is full; nothing
	// was written, reads still work, and the same request succeeds once
	// space returns: 503, like Unavailable, but a client can tell "back
	// off for a while" from "a dependency is down".
	StoreFull Code = "store_full"
)

// Error is an error with a stable code and a message meant for clients.
// Err, when set, is the underlying cause; it is logged but never shown.
type Error struct {
	Code    Code
	Message string
	Err     error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an *Error with the given code and message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code and message whose cause is err.
func Wrap(err error, code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Status returns the HTTP status for code.
func Status(code Code) int {
	switch code {
	case Invalid:
		return http.StatusBadRequest
	case Unauthorized:
		return http.StatusUnauthorized
	case Forbidden:
		return http.StatusForbidden
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Unavailable, StoreFull:
		return http.StatusServiceUnavailable
	case RateLimited:
		return http.StatusTooManyRequests
	case Unsupported:
		return http.StatusMethodNotAllowed
	case Timeout:
		return http.StatusRequestTimeout
	case NotAcceptable:
		return http.StatusUnsupportedMediaType
	case PreconditionFailed:
		return http.StatusPreconditionFailed
	default:
		return http.StatusInternalServerError
	}
}

// CodeForStatus maps an HTTP status to a code; it is used to translate errors
// produced by libraries (echo's 404/405, body limits) into the house format.
func CodeForStatus(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return Invalid
	case http.StatusUnauthorized:
		return Unauthorized
	case http.StatusForbidden:
		return Forbidden
	case http.StatusNotFound:
		return NotFound
	case http.StatusMethodNotAllowed:
		return Unsupported
	case http.StatusRequestTimeout:
		return Timeout
	case http.StatusConflict:
		return Conflict
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusUnsupportedMediaType:
		return NotAcceptable
	case http.StatusPreconditionFailed:
		return PreconditionFailed
	case http.StatusTooManyRequests:
		return RateLimited
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	default:
		if status >= 400 && status < 500 {
			return Invalid
		}
		return Internal
	}
}

// Body is the JSON error body every HTTP role writes:
// {"error":{"code":"...","message":"...","request_id":"..."}}.
type Body struct {
	Error BodyError `json:"error"`
}

// BodyError is the inside of Body.
type BodyError struct {
	Code      Code   `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// Public returns the code and the client-facing message for err. An error
// without a code is internal and gets a generic message: its text may hold
// details that are not the client's business.
func Public(err error) (Code, string) {
	var e *Error
	if errors.As(err, &e) && e.Code != Internal {
		return e.Code, e.Message
	}
	return Internal, "internal error"
}

// WriteHTTP writes err as the house JSON error body with its status.
// It must be called before anything else is written to w.
func WriteHTTP(w http.ResponseWriter, err error, requestID string) {
	code, msg := Public(err)
	WriteCode(w, Status(code), code, msg, requestID)
}

// WriteCode writes a JSON error body with an explicit status, for callers
// (such as the balancer) whose status is not the code's default.
func WriteCode(w http.ResponseWriter, status int, code Code, msg, requestID string) {
	body, _ := json.Marshal(Body{Error: BodyError{Code: code, Message: msg, RequestID: requestID}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// RespondNATS answers a micro request with err's code and public message.
func RespondNATS(req micro.Request, err error) error {
	code, msg := Public(err)
	return req.Error(string(code), msg, nil)
}

// FromNATSReply returns the *Error carried by a micro error reply, or nil if
// msg is a normal reply.
func FromNATSReply(msg *nats.Msg) error {
	code := msg.Header.Get(micro.ErrorCodeHeader)
	if code == "" {
		return nil
	}
	return &Error{Code: Code(code), Message: msg.Header.Get(micro.ErrorHeader)}
}
