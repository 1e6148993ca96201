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
	// DBItemCreate creates an item. The request is
	// {"name":...,"price_cents":...,"stock":...}, every field required;
	// the reply is the new Item (version 1, its id chosen by the
	// database), or invalid for a missing or out-of-range field. With
	// "create_key" and "body_hash" (dbsvc.CreateKey, the two together)
	// the create is repeatable: a repeat with the same key and hash
	// answers the item the key created, as it is now, with
	// "replayed":true added, and writes nothing; with another hash it is
	// conflict, and not_found once that item was deleted.
	DBItemCreate = "db.items.create"
	// DBItemUpdate replaces an item's name, price and stock. The request
	// is {"id":N,"name":...,"price_cents":...,"stock":...}, every field
	// required, with an optional "if_match":[V,...], the versions the item
	// may have for the write to happen; the reply is the updated Item
	// (version one up), or not_found, or invalid (a missing field is not
	// taken as zero), or precondition_failed when the item's version is
	// not in if_match (nothing written).
	DBItemUpdate = "db.items.update"
	// DBItemPatch changes some of an item's fields, in one transaction
	// with the read of the others. The request is {"id":N} with any of
	// "name", "price_cents", "stock" (an absent or null one is kept) and
	// the optional "if_match" of DBItemUpdate; the reply and errors are
	// DBItemUpdate's. A request that names no field writes nothing and
	// returns the item as it is.
	DBItemPatch = "db.items.patch"
	// DBItemList reads one page of items in id order (keyset
	// pagination). The request is {"after_id":N,"limit":M}, both optional
	// ({} is the first page of dbsvc.DefaultListLimit items); the reply is
	// an ItemPage, or invalid for a bad body, an after_id < 0 or a limit
	// outside 1..dbsvc.MaxListLimit.
	DBItemList = "db.items.list"
	// DBItemDelete deletes an item and its sales. The request is
	// {"id":N}, with the optional "if_match" of DBItemUpdate; the reply is
	// {"id":N,"deleted":true}, or not_found, or invalid for a bad body or
	// an id <= 0, or precondition_failed.
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
