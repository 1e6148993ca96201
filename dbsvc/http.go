package dbsvc

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/reqid"
)

// newHandler returns the role's HTTP API:
//
//	GET /db                        the data report (the lab's endpoint)
//	GET /items?after_id=N&limit=M  one ItemPage, as wire.DBItemList
//	GET /items/{id}                one item
//	GET /healthz, /readyz, /metrics
//
// Writes (create, update, patch, delete) are NATS only. Anything else gets
// the house JSON error body, 404 or 405.
func newHandler(st *store, reg *prometheus.Registry, ready ops.ReadyFunc, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	route(mux, "GET /db", st, log, noInput, report)
	route(mux, "GET /items", st, log, parseListQuery, listItems)
	route(mux, "GET /items/{id}", st, log, parseItemPath, getItem)
	ops.Mount(mux, "", reg, ready)
	return httpserver.JSONErrors(mux)
}

// route serves op at pattern: parse reads its input from the path or the
// query, and op checks and answers it as it does the NATS request. An error
// becomes the house JSON error body with its code's status (a bad input is
// 400, an unknown item 404).
func route[Req, Resp any](mux *http.ServeMux, pattern string, st *store, log *slog.Logger, parse func(*http.Request) (Req, error), op operation[Req, Resp]) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		rid := requestID(w, r)
		log := log.With("route", pattern, "request_id", rid)
		log.Debug("http request")
		in, err := parse(r)
		if err != nil {
			writeRouteError(w, r, log, err, rid)
			return
		}
		out, err := op(r.Context(), st, in)
		if err != nil {
			writeRouteError(w, r, log, err, rid)
			return
		}
		writeJSON(w, log, http.StatusOK, out)
	})
}

// parseItemPath reads the id of GET /items/{id}; getItem checks its range.
func parseItemPath(r *http.Request) (itemGetRequest, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return itemGetRequest{}, apperr.New(apperr.Invalid, badIDMessage)
	}
	return itemGetRequest{ID: id}, nil
}

// parseListQuery reads after_id and limit from the query string; an absent or
// empty parameter is left unset. It returns invalid for one that is not an
// integer; listItems checks the ranges, as it does a wire.DBItemList request.
func parseListQuery(r *http.Request) (itemListRequest, error) {
	var in itemListRequest
	q := r.URL.Query()
	if v := q.Get("after_id"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return itemListRequest{}, apperr.New(apperr.Invalid, "after_id must be an integer >= 0")
		}
		in.AfterID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return itemListRequest{}, apperr.New(apperr.Invalid, "limit must be an integer between 1 and %d", MaxListLimit)
		}
		in.Limit = &n
	}
	return in, nil
}

// requestID returns the request's X-Request-ID and echoes it on the response,
// so that a person with curl can find the request in the logs.
func requestID(w http.ResponseWriter, r *http.Request) string {
	rid := r.Header.Get(reqid.Header)
	if rid != "" {
		w.Header().Set(reqid.Header, rid)
	}
	return rid
}

// writeRouteError writes an error from parsing or answering a request. When
// the client has gone away, the query was cancelled for that reason:
// nothing is wrong, and nobody is listening for the answer.
func writeRouteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, rid string) {
	if r.Context().Err() != nil {
		log.Debug("client went away", "err", err)
		return
	}
	writeError(w, log, publicError(err), rid)
}

// writeError logs err if it is the service's fault and writes it as the
// house JSON error body.
func writeError(w http.ResponseWriter, log *slog.Logger, err error, rid string) {
	logFailure(log, err)
	apperr.WriteHTTP(w, err, rid)
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, log *slog.Logger, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, log, err, w.Header().Get(reqid.Header))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
