package natsconn

import (
	"context"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// ReplyInbox returns the inbox subtree under which a connection of user
// receives the replies of the micro service named service:
// _INBOX.<user>.<service>. The NATS permissions (natsconf) let the
// service's responders publish there and nowhere else in the caller's
// inbox, so that a role allowed to answer one request of a gateway
// (a worker, svc.process) cannot forge the reply to another (dbsvc's
// db.users.get). No nats.go inbox collides with it: those put a 22-character
// nuid right after the prefix.
func ReplyInbox(user, service string) string { return InboxPrefix(user) + "." + service }

// serviceInbox is ReplyInbox for the connection nc.
func serviceInbox(nc *nats.Conn, service string) string {
	prefix := nc.Opts.InboxPrefix
	if prefix == "" {
		prefix = nats.InboxPrefix[:len(nats.InboxPrefix)-1] // "_INBOX"
	}
	return prefix + "." + service
}

// ReplyMux sends requests to one micro service and takes their replies on
// the service's own reply inbox (ReplyInbox), with one subscription for
// every request, as nats.go's own request mux does for the connection's
// main inbox.
type ReplyMux struct {
	nc     *nats.Conn
	prefix string // <inbox>.<service>.<nuid>.

	mu      sync.Mutex
	sub     *nats.Subscription
	waiting map[string]chan *nats.Msg
}

// NewReplyMux returns a mux for requests to service over nc. It subscribes
// on the first request.
func NewReplyMux(nc *nats.Conn, service string) *ReplyMux {
	return &ReplyMux{nc: nc, prefix: serviceInbox(nc, service) + "." + nuid.Next() + ".", waiting: map[string]chan *nats.Msg{}}
}

// Request publishes msg with a reply subject of the mux and waits for the
// reply until ctx ends. It returns nats.ErrNoResponders when no one
// listens on msg's subject, and ctx's error when it ends first; callers
// translate them with RequestError.
func (m *ReplyMux) Request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	token := nuid.Next()
	ch := make(chan *nats.Msg, 1)
	m.mu.Lock()
	if m.sub == nil {
		sub, err := m.nc.Subscribe(m.prefix+"*", m.deliver)
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
		m.sub = sub
	}
	m.waiting[token] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.waiting, token)
		m.mu.Unlock()
	}()

	msg.Reply = m.prefix + token
	if err := m.nc.PublishMsg(msg); err != nil {
		return nil, err
	}
	select {
	case reply := <-ch:
		if noResponders(reply) {
			return nil, nats.ErrNoResponders
		}
		return reply, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// deliver hands a reply to the request waiting for it; a late reply (its
// request gave up) or a second one is dropped.
func (m *ReplyMux) deliver(reply *nats.Msg) {
	token := strings.TrimPrefix(reply.Subject, m.prefix)
	m.mu.Lock()
	ch := m.waiting[token]
	delete(m.waiting, token)
	m.mu.Unlock()
	if ch != nil {
		ch <- reply
	}
}
