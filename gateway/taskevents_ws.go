package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
)

// The task event streams as WebSocket messages: the same routes, GET
// /tasks/{id}/events and GET /tasks/events, answer an upgrade to a
// WebSocket with the events server-sent events would carry, one text
// message each: {"event":"task","id":<revision>,"data":{...}} ("id" is
// left out of events without one: end, overflow). The stream ends as the
// event stream does, with a normal closure after "end", or a going-away
// one when the gateway stops. The client sends nothing; what it sends is
// read and dropped. The token goes in the Authorization header of the
// handshake, as for any request (a browser's WebSocket cannot set that
// header, so the console uses server-sent events).

// wsWriteTimeout bounds the write of one message: a client that stops
// reading is cut rather than left holding the stream.
const wsWriteTimeout = 10 * time.Second

// isWebSocket reports whether r asks to upgrade to a WebSocket.
func isWebSocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header field of h
// names token, in any case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range bytes.Split([]byte(v), []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(t), []byte(token)) {
				return true
			}
		}
	}
	return false
}

// wsSink sends a stream's events as WebSocket messages.
type wsSink struct {
	conn    *websocket.Conn
	ctx     context.Context // ends when the client closes or leaves
	pending [][]byte
}

// startWebSocket completes the handshake of c. The deadlines net/http
// set for reading the request go first: the connection is the stream's
// from now on.
func startWebSocket(c echo.Context) (eventSink, error) {
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	conn, err := websocket.Accept(c.Response(), c.Request(), nil)
	if err != nil {
		return nil, err // Accept answered the bad handshake
	}
	// The stream's context outlives the request's (which ends when the
	// handler returns, not when the client goes): CloseRead reads, and
	// drops, what the client sends, and ends it when the client closes.
	return &wsSink{conn: conn, ctx: conn.CloseRead(context.WithoutCancel(c.Request().Context()))}, nil
}

func (s *wsSink) send(ev event) error {
	var b bytes.Buffer
	b.WriteString(`{"event":`)
	name, _ := json.Marshal(ev.name)
	b.Write(name)
	if ev.rev > 0 {
		b.WriteString(`,"id":`)
		b.WriteString(strconv.FormatUint(ev.rev, 10))
	}
	b.WriteString(`,"data":`)
	if err := json.Compact(&b, ev.data); err != nil {
		b.WriteString("{}")
	}
	b.WriteByte('}')
	s.pending = append(s.pending, b.Bytes())
	return nil
}

func (s *wsSink) flush() error {
	for len(s.pending) > 0 {
		ctx, cancel := context.WithTimeout(s.ctx, wsWriteTimeout)
		err := s.conn.Write(ctx, websocket.MessageText, s.pending[0])
		cancel()
		if err != nil {
			s.pending = nil
			return err
		}
		s.pending = s.pending[1:]
	}
	return nil
}

// ping sends a ping frame; the pong is read by CloseRead's reader.
func (s *wsSink) ping() {
	ctx, cancel := context.WithTimeout(s.ctx, wsWriteTimeout)
	defer cancel()
	_ = s.conn.Ping(ctx)
}

func (s *wsSink) end() {
	_ = s.send(event{name: "end", data: []byte("{}")})
	if s.flush() == nil {
		_ = s.conn.Close(websocket.StatusNormalClosure, "end of the task's events")
	}
}

func (s *wsSink) done() <-chan struct{} { return s.ctx.Done() }

// close ends the connection if end did not: the gateway is stopping, the
// stream overflowed, or the client left.
func (s *wsSink) close() {
	_ = s.conn.Close(websocket.StatusGoingAway, "the stream ends; reconnect")
}
