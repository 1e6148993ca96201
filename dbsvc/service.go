package dbsvc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/wire"
)

// ServiceVersion is the version the micro service announces.
const ServiceVersion = "1.0.0"

// maxRequestBytes bounds request bodies; items are small.
const maxRequestBytes = 64 << 10

// itemGetRequest is the body of a wire.DBItemGet request.
type itemGetRequest struct {
	ID int64 `json:"id"`
}

// itemListRequest is the body of a wire.DBItemList request, and the query
// of GET /items.
type itemListRequest struct {
	AfterID int64 `json:"after_id,omitempty"`
	// Limit is a pointer so that an explicit 0 is invalid rather than
	// DefaultListLimit.
	Limit *int `json:"limit,omitempty"`
}

// limit validates r and returns the page size it asks for.
func (r itemListRequest) limit() (int, error) {
	if r.AfterID < 0 {
		return 0, apperr.New(apperr.Invalid, "after_id must be >= 0")
	}
	if r.Limit == nil {
		return DefaultListLimit, nil
	}
	if *r.Limit < 1 || *r.Limit > MaxListLimit {
		return 0, apperr.New(apperr.Invalid, "limit must be between 1 and %d", MaxListLimit)
	}
	return *r.Limit, nil
}

// itemDeleteRequest is the body of a wire.DBItemDelete request.
type itemDeleteRequest struct {
	ID      int64   `json:"id"`
	IfMatch []int64 `json:"if_match,omitempty"`
}

// itemDeleteReply is the reply to a wire.DBItemDelete request.
type itemDeleteReply struct {
	ID      int64 `json:"id"`
	Deleted bool  `json:"deleted"`
}

// itemCreateRequest is the body of a wire.DBItemCreate request: every
// field of the item and, for a repeatable create, its CreateKey.
type itemCreateRequest struct {
	ItemFields
	CreateKey
}

// itemWriteRequest is the body of a wire.DBItemUpdate or wire.DBItemPatch
// request: the item, the precondition (the versions it may have; none: any)
// and the fields, all of them for an update.
type itemWriteRequest struct {
	ID      int64   `json:"id"`
	IfMatch []int64 `json:"if_match,omitempty"`
	ItemFields
}

// service answers the NATS endpoints.
//
// Each endpoint handles one request at a time, in its subscription's
// goroutine: micro reads the outcome of a request when its handler returns,
// so a handler must not answer from another goroutine. The data report
// therefore runs one at a time per dbsvc (about ten per second for the
// default seed), while item reads and writes, on their own endpoints, are
// not queued behind it. That makes the database the scarce resource the
// gateway's cache exists to spare.
type service struct {
	store *store
	log   *slog.Logger

	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

func newService(st *store, log *slog.Logger) *service {
	return &service{store: st, log: log}
}

// register adds the micro service and its endpoints to nc.
func (s *service) register(nc *nats.Conn) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        wire.DBService,
		Version:     ServiceVersion,
		Description: "scalelab database: the data report and items (SQLite)",
		ErrorHandler: func(_ micro.Service, nerr *micro.NATSError) {
			s.log.Error("nats service error", "subject", nerr.Subject, "err", nerr.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", wire.DBService, err)
	}
	st := s.store
	endpoints := []struct {
		name, subject string
		handle        handler
	}{
		{queryData, wire.DBData, endpoint(st, noInput, report)},
		{queryItemGet, wire.DBItemGet, endpoint(st, decodeBody[itemGetRequest], getItem)},
		{queryItemCreate, wire.DBItemCreate, endpoint(st, decodeBody[itemCreateRequest], createItem)},
		{queryItemUpdate, wire.DBItemUpdate, endpoint(st, decodeBody[itemWriteRequest], updateItem)},
		{queryItemPatch, wire.DBItemPatch, endpoint(st, decodeBody[itemWriteRequest], patchItem)},
		{queryItemList, wire.DBItemList, endpoint(st, decodeBody[itemListRequest], listItems)},
		{queryItemDelete, wire.DBItemDelete, endpoint(st, decodeBody[itemDeleteRequest], deleteItem)},
		{queryUserPut, wire.DBUserPut, endpoint(st, decodeBody[UserPut], putUser)},
		{queryUserGet, wire.DBUserGet, endpoint(st, decodeBody[userGetRequest], getUser)},
	}
	for _, e := range endpoints {
		h := s.dispatch(e.subject, e.handle)
		if err := svc.AddEndpoint(e.name, h, micro.WithEndpointSubject(e.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s: %w", e.subject, err)
		}
	}
	return svc, nil
}

// handler answers the body of one NATS request with the reply to encode as
// JSON, or an error.
type handler func(ctx context.Context, data []byte) (any, error)

// operation is one request of the API, answered from st. The NATS endpoint
// (endpoint) and the HTTP route (route) of a request run the same
// operation, so both check the same things and fail with the same errors;
// they differ only in where the input comes from.
type operation[Req, Resp any] func(ctx context.Context, st *store, in Req) (Resp, error)

// endpoint adapts op to a NATS endpoint: parse reads its input from the
// request body (decodeBody, or noInput for a request without one).
func endpoint[Req, Resp any](st *store, parse func([]byte) (Req, error), op operation[Req, Resp]) handler {
	return func(ctx context.Context, data []byte) (any, error) {
		in, err := parse(data)
		if err != nil {
			return nil, err
		}
		// dispatch reads the reply only when err is nil.
		return op(ctx, st, in)
	}
}

// decodeBody reads a request body that holds one JSON Req, strictly
// (strictjson.DecodeBody: duplicate keys, keys of another case, unknown
// fields, trailing data, bad types and numbers out of range are invalid,
// with a message that names the field).
func decodeBody[Req any](data []byte) (Req, error) {
	if len(data) > maxRequestBytes {
		var zero Req
		return zero, apperr.New(apperr.Invalid, "request body is larger than %d bytes", maxRequestBytes)
	}
	return strictjson.DecodeBody[Req](bytes.NewReader(data))
}

// noInput is the parse step of a request that carries no input, whatever
// it is sent with: the data report's. The endpoint ignores its body.
func noInput[T any](T) (struct{}, error) {
	return struct{}{}, nil
}

// dispatch wraps handle: it answers with handle's result as JSON, or turns
// its error into a micro error reply. A request that arrives after close is
// answered unavailable.
func (s *service) dispatch(subject string, handle handler) micro.HandlerFunc {
	return func(req micro.Request) {
		if !s.begin() {
			_ = apperr.RespondNATS(req, apperr.New(apperr.Unavailable, "database service is shutting down"))
			return
		}
		defer s.running.Done()
		log := s.log.With("subject", subject, "request_id", req.Headers().Get(reqid.Header))
		log.Debug("nats request")
		// No request context in micro; the store bounds every query with
		// its own timeout.
		res, err := handle(context.Background(), req.Data())
		if err != nil {
			err = publicError(err)
			logFailure(log, err)
			if rerr := apperr.RespondNATS(req, err); rerr != nil {
				log.Warn("nats respond failed", "err", rerr)
			}
			return
		}
		if rerr := req.RespondJSON(res); rerr != nil {
			log.Warn("nats respond failed", "err", rerr)
		}
	}
}

// begin registers one running request; it returns false after close.
func (s *service) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.running.Add(1)
	return true
}

// close refuses new requests and waits for the running ones, so that the
// database can be closed after it. Stop the micro service first: Stop drains
// its subscriptions in the background, and messages still pending are
// handed to the handlers after Stop returns; they are answered unavailable.
func (s *service) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.running.Wait()
}

// The operations of the item endpoints and routes. Each validates its
// request before it touches the database.

// report runs the data report (wire.DBData, GET /db).
func report(ctx context.Context, st *store, _ struct{}) (Report, error) {
	return st.Report(ctx)
}

// getItem reads one item (wire.DBItemGet, GET /items/{id}).
func getItem(ctx context.Context, st *store, in itemGetRequest) (Item, error) {
	if err := checkID(in.ID); err != nil {
		return Item{}, err
	}
	it, err := st.Item(ctx, in.ID)
	return it, itemError(in.ID, err)
}

// createItem creates an item from all of its fields (wire.DBItemCreate),
// once per CreateKey: a repeat with the key returns the item it created.
func createItem(ctx context.Context, st *store, in itemCreateRequest) (CreatedItem, error) {
	u, err := wholeItem(in.ItemFields)
	if err != nil {
		return CreatedItem{}, err
	}
	if err := in.CreateKey.Validate(); err != nil {
		return CreatedItem{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	it, err := st.CreateItem(ctx, u, in.CreateKey)
	return it, createError(err)
}

// createError gives the errors of a repeated create their codes and says
// what happened in the client's terms (the create key is its
// Idempotency-Key): ErrKeyReused conflict, a deleted item not_found.
// Other errors, and nil, pass through unchanged.
func createError(err error) error {
	if deleted, ok := errors.AsType[*createdDeletedError](err); ok {
		return apperr.Wrap(err, apperr.NotFound,
			"the item created with this Idempotency-Key, item %d, was deleted since; nothing was written (a new key creates a new item)", deleted.id)
	}
	if errors.Is(err, ErrKeyReused) {
		return apperr.Wrap(err, apperr.Conflict,
			"Idempotency-Key was already used with a different body; nothing was written (a new key creates a new item)")
	}
	return err
}

// updateItem replaces all of an item's fields (wire.DBItemUpdate).
func updateItem(ctx context.Context, st *store, in itemWriteRequest) (Item, error) {
	if err := checkID(in.ID); err != nil {
		return Item{}, err
	}
	u, err := wholeItem(in.ItemFields)
	if err != nil {
		return Item{}, err
	}
	it, err := st.UpdateItem(ctx, in.ID, u, in.IfMatch...)
	return it, itemError(in.ID, err)
}

// patchItem changes the fields of an item that the request holds
// (wire.DBItemPatch).
func patchItem(ctx context.Context, st *store, in itemWriteRequest) (Item, error) {
	if err := checkID(in.ID); err != nil {
		return Item{}, err
	}
	if err := in.ItemFields.Validate(); err != nil {
		return Item{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	it, err := st.PatchItem(ctx, in.ID, in.ItemFields, in.IfMatch...)
	return it, itemError(in.ID, err)
}

// wholeItem returns f as an ItemUpdate if it holds every field, each in
// range (ItemFields.Complete); else an invalid error whose message says
// which field and why.
func wholeItem(f ItemFields) (ItemUpdate, error) {
	u, err := f.Complete()
	if err != nil {
		return ItemUpdate{}, apperr.Wrap(err, apperr.Invalid, "%v", err)
	}
	return u, nil
}

// listItems reads one page of items (wire.DBItemList, GET /items).
func listItems(ctx context.Context, st *store, in itemListRequest) (ItemPage, error) {
	limit, err := in.limit()
	if err != nil {
		return ItemPage{}, err
	}
	return st.ListItems(ctx, in.AfterID, limit)
}

// deleteItem deletes an item and its sales (wire.DBItemDelete).
func deleteItem(ctx context.Context, st *store, in itemDeleteRequest) (itemDeleteReply, error) {
	if err := checkID(in.ID); err != nil {
		return itemDeleteReply{}, err
	}
	if err := st.DeleteItem(ctx, in.ID, in.IfMatch...); err != nil {
		return itemDeleteReply{}, itemError(in.ID, err)
	}
	return itemDeleteReply{ID: in.ID, Deleted: true}, nil
}

// badIDMessage is the invalid answer to an item id that is not a positive
// integer, the same over NATS and HTTP.
const badIDMessage = "id must be a positive integer"

// checkID refuses an item id that no item can have.
func checkID(id int64) error {
	if id <= 0 {
		return apperr.New(apperr.Invalid, badIDMessage)
	}
	return nil
}

// itemError gives ErrNotFound the code not_found and ErrVersionMismatch
// precondition_failed; other errors, and nil, pass through unchanged.
func itemError(id int64, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return apperr.Wrap(err, apperr.NotFound, "item %d not found", id)
	case errors.Is(err, ErrVersionMismatch):
		return apperr.Wrap(err, apperr.PreconditionFailed,
			"item %d has changed since the version If-Match names (or If-Match is not one of its ETags); nothing was written: read it again for its current ETag", id)
	}
	return err
}

// publicError gives a query that ran over its timeout the code unavailable
// (the database is overloaded: a client may retry), and a write SQLite
// refused as full (SQLITE_FULL: fullError) store_full. Other errors keep their
// code; those without one are internal, so the client sees a generic
// message and the log gets the details.
func publicError(err error) error {
	if apperr.CodeOf(err) != apperr.Internal {
		return err
	}
	switch err = fullError(err); {
	case errors.Is(err, context.DeadlineExceeded):
		return apperr.Wrap(err, apperr.Unavailable, "database query timed out")
	case errors.Is(err, errFull):
		return apperr.Wrap(err, apperr.StoreFull, "the database is full (its --max-db-bytes or its disk): nothing was written; reads still work; try again later")
	}
	return err
}

// logFailure logs an error that is the service's fault, once, with its
// cause; errors the client caused are only answered.
func logFailure(log *slog.Logger, err error) {
	switch apperr.CodeOf(err) {
	case apperr.Internal:
		log.Error("request failed", "err", err)
	case apperr.Unavailable, apperr.StoreFull:
		log.Warn("request failed", "err", err)
	}
}
