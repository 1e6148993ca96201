package dbsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/wire"
)

// DefaultClientTimeout is the request timeout of a Client whose Timeout is
// zero.
const DefaultClientTimeout = 5 * time.Second

// Client calls the dbsvc NATS endpoints. It is what other roles use to reach
// the database; it is safe for concurrent use.
//
// Every method returns an *apperr.Error (check it with errors.As) when the
// request fails in a way the caller's client should hear about:
// apperr.Unavailable when no dbsvc is running, it did not answer in time, or
// nc is not connected; and the code the service answered with otherwise
// (not_found, invalid, precondition_failed, conflict, unavailable,
// internal). A not_found answer also matches ErrNotFound with errors.Is, a
// precondition_failed one ErrVersionMismatch, and a conflict one
// ErrKeyReused.
//
// The item writes take their precondition as ifMatch: the versions
// (Item.Version) the item may have for the write to happen, as the
// gateway reads them from If-Match. None means any version: the write is
// unconditional. An item at another version is answered
// precondition_failed and nothing is written.
type Client struct {
	// mux takes the replies on dbsvc's own reply inbox, where no other
	// role may publish (natsconn.ReplyInbox).
	mux *natsconn.ReplyMux
	// Timeout bounds each request, in addition to the deadline of the ctx
	// passed in (the earlier one wins). Zero means DefaultClientTimeout.
	Timeout time.Duration
}

// NewClient returns a Client that sends its requests over nc.
func NewClient(nc *nats.Conn) *Client {
	return &Client{mux: natsconn.NewReplyMux(nc, wire.DBService), Timeout: DefaultClientTimeout}
}

// Data runs the data report and returns the Report as the service encoded
// it, so that a cache can store the bytes as they are. The request has no
// body: the endpoint ignores it.
func (c *Client) Data(ctx context.Context, requestID string) (json.RawMessage, error) {
	reply, err := c.request(ctx, wire.DBData, requestID, nil)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(reply), nil
}

// ItemJSON returns the item with the given id as the service encoded it (an
// Item in JSON), so that a cache can store the bytes as they are.
func (c *Client) ItemJSON(ctx context.Context, requestID string, id int64) (json.RawMessage, error) {
	return call[json.RawMessage](ctx, c, wire.DBItemGet, requestID, itemGetRequest{ID: id})
}

// Item returns the item with the given id: ItemJSON, decoded.
func (c *Client) Item(ctx context.Context, requestID string, id int64) (Item, error) {
	return call[Item](ctx, c, wire.DBItemGet, requestID, itemGetRequest{ID: id})
}

// CreateItem creates an item with version 1 and returns it with the id
// the database chose. An item that fails ItemUpdate.Validate, or a key
// that fails CreateKey.Validate, is answered invalid.
//
// With a key (not the zero CreateKey) the create is repeatable: the first
// one with the key creates the item; a repeat with the same key and body
// hash returns that item as it is now, with Replayed set, and writes
// nothing. A repeat with another body hash is answered conflict (matching
// ErrKeyReused), one whose item was deleted since not_found (matching
// ErrNotFound); neither writes anything.
func (c *Client) CreateItem(ctx context.Context, requestID string, u ItemUpdate, key CreateKey) (CreatedItem, error) {
	return call[CreatedItem](ctx, c, wire.DBItemCreate, requestID, itemCreateRequest{ItemFields: u.fields(), CreateKey: key})
}

// UpdateItem replaces the name, price and stock of item id, if its version
// is allowed by ifMatch, and returns the updated item. An update that fails
// ItemUpdate.Validate is answered invalid.
func (c *Client) UpdateItem(ctx context.Context, requestID string, id int64, u ItemUpdate, ifMatch ...int64) (Item, error) {
	return call[Item](ctx, c, wire.DBItemUpdate, requestID, itemWriteRequest{ID: id, IfMatch: ifMatch, ItemFields: u.fields()})
}

// PatchItem sets the fields p holds on item id and keeps the others, in
// one transaction, if its version is allowed by ifMatch; it returns the
// item as it then is. A field that fails ItemFields.Validate is answered
// invalid. An empty p writes nothing.
func (c *Client) PatchItem(ctx context.Context, requestID string, id int64, p ItemFields, ifMatch ...int64) (Item, error) {
	return call[Item](ctx, c, wire.DBItemPatch, requestID, itemWriteRequest{ID: id, IfMatch: ifMatch, ItemFields: p})
}

// ListItems returns up to limit items with ids above afterID, lowest id
// first. Start with afterID 0 and pass ItemPage.NextAfterID on until it is 0.
// A limit of 0 means DefaultListLimit; an afterID < 0 or a limit outside
// 0..MaxListLimit is answered invalid.
func (c *Client) ListItems(ctx context.Context, requestID string, afterID int64, limit int) (ItemPage, error) {
	req := itemListRequest{AfterID: afterID}
	if limit != 0 {
		req.Limit = &limit
	}
	return call[ItemPage](ctx, c, wire.DBItemList, requestID, req)
}

// DeleteItem deletes item id and its sales, if its version is allowed by
// ifMatch. An unknown id is answered not_found (matching ErrNotFound), so a
// second delete of the same id fails.
func (c *Client) DeleteItem(ctx context.Context, requestID string, id int64, ifMatch ...int64) error {
	reply, err := call[itemDeleteReply](ctx, c, wire.DBItemDelete, requestID, itemDeleteRequest{ID: id, IfMatch: ifMatch})
	if err != nil {
		return err
	}
	if !reply.Deleted || reply.ID != id {
		return fmt.Errorf("%s reply %+v: want item %d deleted", wire.DBItemDelete, reply, id)
	}
	return nil
}

// call is one round trip to the service: it encodes req as the JSON body,
// sends it to subject and decodes the reply into a Resp. A json.RawMessage
// reply is returned as it arrived, neither parsed nor copied, for the
// callers that hand the service's bytes on as they are. It returns the
// errors of request, or one for a req it cannot encode or a reply it
// cannot decode.
func call[Resp, Req any](ctx context.Context, c *Client, subject, requestID string, req Req) (Resp, error) {
	var resp Resp
	body, err := json.Marshal(req)
	if err != nil {
		return resp, fmt.Errorf("encode %s request: %w", subject, err)
	}
	reply, err := c.request(ctx, subject, requestID, body)
	if err != nil {
		return resp, err
	}
	if raw, ok := any(&resp).(*json.RawMessage); ok {
		*raw = reply
		return resp, nil
	}
	if err := json.Unmarshal(reply, &resp); err != nil {
		var zero Resp
		return zero, fmt.Errorf("decode %s reply: %w", subject, err)
	}
	return resp, nil
}

// codeErrors are the sentinel errors a reply's code stands for, so that
// callers match them with errors.Is whether the error came over NATS or
// not.
var codeErrors = map[apperr.Code]error{
	apperr.NotFound:           ErrNotFound,
	apperr.PreconditionFailed: ErrVersionMismatch,
	apperr.Conflict:           ErrKeyReused,
}

// request sends one request and returns the reply's body. It returns an
// *apperr.Error: unavailable when the request got no reply, or the error
// the reply carries.
func (c *Client) request(ctx context.Context, subject, requestID string, data []byte) ([]byte, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	msg := &nats.Msg{Subject: subject, Data: data}
	if requestID != "" {
		msg.Header = nats.Header{reqid.Header: []string{requestID}}
	}
	reply, err := c.mux.Request(ctx, msg)
	if err != nil {
		return nil, natsconn.RequestError("database service", fmt.Errorf("request %s: %w", subject, err))
	}
	if err := apperr.FromNATSReply(reply); err != nil {
		if aerr, ok := errors.AsType[*apperr.Error](err); ok {
			aerr.Err = codeErrors[aerr.Code] // nil for the others
		}
		return nil, fmt.Errorf("request %s: %w", subject, err)
	}
	return reply.Data, nil
}
