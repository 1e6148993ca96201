package wire

// dbsvc's micro service. All requests are answered in JSON; errors come
// back as micro error replies whose Nats-Service-Error-Code header holds
// an apperr code (dbsvc.Client turns them into *apperr.Error).
const (
	// DBService is dbsvc's micro service name, as `nats micro ls` lists it.
	DBService = "dbsvc"
	// DBData runs the data report. The request body is ignored; the
	// reply is a dbsvc.Report.
	DBData = "db.data"
	// DBItemGet reads one item. The request is {"id":N}; the reply is an
	// Item, or not_found, or invalid for a bad body or an id <= 0.
	DBItemGet = "db.items.get"
	// DBItemUpdate replaces an item's name, price and stock. The request
	// is {"id":N,"name":...,"price_cents":...,"stock":...}; the reply is the
	// updated Item, or not_found, or invalid.
	DBItemUpdate = "db.items.update"
	// DBItemList reads one page of items in id order (keyset
	// pagination). The request is {"after_id":N,"limit":M}, both optional
	// ({} is the first page of dbsvc.DefaultListLimit items); the reply is
	// an ItemPage, or invalid for a bad body, an after_id < 0 or a limit
	// outside 1..dbsvc.MaxListLimit.
	DBItemList = "db.items.list"
	// DBItemDelete deletes an item and its sales. The request is
	// {"id":N}; the reply is {"id":N,"deleted":true}, or not_found, or
	// invalid for a bad body or an id <= 0.
	DBItemDelete = "db.items.delete"
	// The user endpoints carry bcrypt hashes, never passwords: whoever
	// holds a password hashes it before it reaches NATS (`scalelab users
	// add`) or compares it against the hash it got back (the gateway's
	// POST /auth/token). The hashes are still secrets; NATS permissions
	// keep these subjects to the gateways and operators.

	// DBUserPut creates or replaces a user. The request is a dbsvc.UserPut
	// as JSON; the reply is a UserPutReply, or invalid when the request
	// fails UserPut.Validate.
	DBUserPut = "db.users.put"
	// DBUserGet reads a user. The request is {"name":"..."}; the reply
	// is a User, or not_found, or invalid for a bad body or name.
	DBUserGet = "db.users.get"
)

// The worker's process service: the sync business logic behind
// GET /process.
const (
	// ProcessSubject is the subject of the sync business-logic endpoint.
	ProcessSubject = "svc.process"
	// ProcessService is its micro service name, as `nats micro ls` shows it.
	ProcessService = "process"
)
