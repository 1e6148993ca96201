package natsconf

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

// Role is a NATS user of scalelab: one per role that connects to NATS,
// plus admin for operators. The user name is the role's name.
type Role string

// The NATS users (issue #6). Every gateway shares the gateway user, every
// worker the worker user: instances of a role need the same rights.
const (
	RoleGateway  Role = "gateway"
	RoleWorker   Role = "worker"
	RoleDBSvc    Role = "dbsvc"
	RoleCacheSvc Role = "cachesvc"
	// RoleBalancer is the balancer's live dashboard (/-/dashboard): it
	// only reads figures, so it may only ask for statistics.
	RoleBalancer Role = "balancer"
	// RoleClient is for programs inside the cluster that submit tasks
	// over NATS instead of HTTP (the client package's NewNATS): it may
	// create, read and cancel task records, read the registry and publish
	// tasks, and nothing else: no pulling, no cache, no database.
	RoleClient Role = "client"
	// RoleAdmin is for operators: the nats CLI, `scalelab tasks` and
	// `scalelab users add`, and `up`'s own provisioning connection.
	RoleAdmin Role = "admin"
)

// Roles returns every role, in the order of the permission table.
func Roles() []Role {
	return []Role{RoleGateway, RoleWorker, RoleDBSvc, RoleCacheSvc, RoleBalancer, RoleClient, RoleAdmin}
}

// PasswordEnv returns the environment variable that holds role's password
// in the rendered authorization block: SCALELAB_NATS_<ROLE>_PASSWORD.
func PasswordEnv(r Role) string {
	return "SCALELAB_NATS_" + strings.ToUpper(string(r)) + "_PASSWORD"
}

// Grant is one role's rights. Allow lists are exhaustive (anything not
// allowed is refused); deny lists restate the invariants of issue #6 so
// that a later, broader allow cannot silently break them (deny wins).
type Grant struct {
	Role     Role
	PubAllow []string
	PubDeny  []string
	SubAllow []string
	SubDeny  []string
}

// Names of the JetStream streams behind the buckets.
var (
	kvTasks = "KV_" + task.Bucket
	kvCache = "KV_" + cache.Bucket
)

// jsAPI prefixes a JetStream API subject.
func jsAPI(s string) string { return "$JS.API." + s }

// streamAdmin is what a role that provisions stream needs: look it up,
// create it, and bring its config up to date (nats.go's jetstream
// package: STREAM.INFO, STREAM.CREATE, STREAM.UPDATE).
func streamAdmin(streams ...string) []string {
	var out []string
	for _, s := range streams {
		out = append(out, jsAPI("STREAM.INFO."+s), jsAPI("STREAM.CREATE."+s), jsAPI("STREAM.UPDATE."+s))
	}
	return out
}

// kvAccess is what a KV client of bucket needs: bind to it (STREAM.INFO),
// read keys (DIRECT.GET.<stream>.$KV.<bucket>.<key> for the latest value,
// DIRECT.GET or STREAM.MSG.GET by revision) and write them (put, create,
// update and delete all publish to $KV.<bucket>.<key>).
func kvAccess(bucket string) []string {
	stream := "KV_" + bucket
	return []string{
		jsAPI("STREAM.INFO." + stream),
		jsAPI("DIRECT.GET." + stream), jsAPI("DIRECT.GET." + stream + ".>"),
		jsAPI("STREAM.MSG.GET." + stream),
		"$KV." + bucket + ".>",
	}
}

// kvWatch is what a client that watches or lists the keys of bucket needs
// beyond kvAccess: the ordered push consumer nats.go creates for a watch
// (and for ListKeys), recreates and deletes, with its flow control.
func kvWatch(bucket string) []string {
	stream := "KV_" + bucket
	return []string{
		jsAPI("CONSUMER.CREATE." + stream), jsAPI("CONSUMER.CREATE." + stream + ".>"),
		jsAPI("CONSUMER.INFO." + stream + ".*"), jsAPI("CONSUMER.DELETE." + stream + ".*"),
		"$JS.FC." + stream + ".>", "$JS.FC.*.*." + stream + ".>",
	}
}

// useRegistry is what a role that reads the task-type registry, and writes
// types, queues and workers into it, needs (internal/task.Registry): both
// buckets, read, written, listed and watched.
var useRegistry = concat(
	kvAccess(task.RegistryBucket), kvWatch(task.RegistryBucket),
	kvAccess(task.WorkersBucket), kvWatch(task.WorkersBucket),
)

// readKV is what a client that only reads bucket needs: bind to it and
// get keys (kvAccess without the writes under $KV.<bucket>).
func readKV(bucket string) []string {
	return slices.DeleteFunc(kvAccess(bucket), func(s string) bool { return strings.HasPrefix(s, "$KV.") })
}

// microService is what a micro service instance named name subscribes to:
// its control subjects ($SRV.PING|INFO|STATS, each bare, by name and by
// instance id).
func microService(name string) []string {
	return []string{"$SRV.*", "$SRV.*." + name, "$SRV.*." + name + ".*"}
}

// inbox is where a role receives replies: its own prefix, so that no role
// can read another's replies (KV values, password hashes) by subscribing
// to _INBOX.>.
func inbox(r Role) string { return natsconn.InboxPrefix(string(r)) + ".>" }

// repliesTo lets the responders of the micro service named service answer
// the roles allowed to call it, and no one else: a reply goes only into
// the callers' reply inbox for that service, _INBOX.<role>.<service>
// (natsconn.ReplyInbox; dbsvc's and the process service's clients and
// natsconn.Gather take their replies there). A role that could publish
// into every _INBOX.> could forge the reply to a request it was never
// sent: a worker answering a gateway's db.users.get with a made-up user.
// The micro control subjects ($SRV.PING|INFO|STATS) add the balancer (its
// dashboard reads stats) and admin; admin's whole inbox, since the nats
// CLI (`nats micro ls`) takes replies in its main inbox. JetStream's own
// replies come from the server, not from a role, and need no right here.
//
// Not allow_responses: the server lets a response through even where the
// deny list forbids its subject, so a requester could name
// $JS.API.STREAM.DELETE.TASKS as its reply subject and have the
// responder's (empty) error reply delete the stream. Publishing only
// under the callers' inboxes rules that out.
func repliesTo(service string, callers ...Role) []string {
	var out []string
	for _, r := range callers {
		out = append(out, natsconn.ReplyInbox(string(r), service)+".>")
	}
	return append(out, inbox(RoleAdmin))
}

// anyInbox is every role's inbox. No role but admin may publish to it
// whole; a responder gets repliesTo its callers instead.
const anyInbox = "_INBOX.>"

// Subjects that only admin may publish to.
var adminOnly = []string{
	// Deleting streams or messages, and the consumers and contents of the
	// task pipeline. Dead letters are removed by `tasks dlq retry` and by
	// the gateway's retry and purge of a dead task, and by nobody else
	// (gatewayDLQ).
	jsAPI("STREAM.DELETE.>"),
	msgDeleteAny,
	jsAPI("CONSUMER.DELETE." + task.Stream + ".>"),
	jsAPI("CONSUMER.DELETE." + task.DelayedStream + ".>"),
	jsAPI("CONSUMER.DELETE." + task.DLQStream + ".>"),
	jsAPI("STREAM.PURGE." + task.Stream),
	jsAPI("STREAM.PURGE." + task.DelayedStream),
	jsAPI("STREAM.PURGE." + task.DLQStream),
	jsAPI("STREAM.PURGE." + kvTasks),
	// A gateway deletes one schedule by a roll-up on its subject (see
	// useSchedules), never by a purge, whose subject filter the table
	// cannot bound.
	jsAPI("CONSUMER.DELETE." + task.ScheduleStream + ".>"),
	jsAPI("STREAM.PURGE." + task.ScheduleStream),
	// Users are created by `scalelab users add`, never by a role.
	wire.DBUserPut,
}

// msgDeleteAny is the deletion of one message of any stream: admin's
// (adminOnly), except gatewayDLQ's.
var msgDeleteAny = jsAPI("STREAM.MSG.DELETE.>")

// gatewayDLQ is what a gateway needs of TASKS_DLQ beyond its STREAM.INFO
// (useTasks), for POST /tasks/{id}/retry, POST /tasks/dlq/retry and DELETE
// /tasks/{id}?purge=true of a dead task (internal/task.Retry, Purge): read
// the dead letters of a type (STREAM.MSG.GET: the stream has no direct
// gets) and delete the one of the task it retried or purged
// (STREAM.MSG.DELETE, on this stream only). That is the narrowest grant
// that lets the HTTP API own the DLQ, as the issue asks: a gateway could
// already re-queue any task (it publishes to tasks.>) and delete any
// record (it writes the tasks bucket), so deleting a dead letter, a copy
// of a task that ended, gives it nothing more over the pipeline. The
// deletion of messages of every other stream stays denied to it, by name
// (gatewayMsgDeleteDeny): a deny wins over an allow, so msgDeleteAny,
// which would cover this grant too, is not in the gateway's denies.
var gatewayDLQ = []string{
	jsAPI("STREAM.MSG.GET." + task.DLQStream),
	jsAPI("STREAM.MSG.DELETE." + task.DLQStream),
}

// gatewayMsgDeleteDeny restates adminOnly's msgDeleteAny for the gateway
// on every stream it uses but TASKS_DLQ.
var gatewayMsgDeleteDeny = []string{
	jsAPI("STREAM.MSG.DELETE." + task.Stream),
	jsAPI("STREAM.MSG.DELETE." + task.DelayedStream),
	jsAPI("STREAM.MSG.DELETE." + task.ScheduleStream),
	jsAPI("STREAM.MSG.DELETE." + kvTasks),
	jsAPI("STREAM.MSG.DELETE." + kvCache),
	jsAPI("STREAM.MSG.DELETE.KV_" + task.RegistryBucket),
	jsAPI("STREAM.MSG.DELETE.KV_" + task.WorkersBucket),
}

// without returns list without the subject s.
func without(list []string, s string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(x string) bool { return x == s })
}

// consumeTasks is everything that takes tasks off TASKS: creating or
// looking up a consumer on it, pulling, and acking (v1 and v2 ack
// subjects: $JS.ACK.<stream>.… and $JS.ACK.<domain>.<account>.<stream>.…).
var consumeTasks = []string{
	jsAPI("CONSUMER.CREATE." + task.Stream), jsAPI("CONSUMER.CREATE." + task.Stream + ".>"),
	jsAPI("CONSUMER.DURABLE.CREATE." + task.Stream + ".>"),
	jsAPI("CONSUMER.MSG.NEXT." + task.Stream + ".>"),
	"$JS.ACK." + task.Stream + ".>", "$JS.ACK.*.*." + task.Stream + ".>",
}

// useSchedules is what a gateway needs of the recurring schedules
// (gateway/schedules.go, schedules_run.go) beyond the stream's
// STREAM.INFO (useTasks): read a schedule or a tick (STREAM.MSG.GET: the
// stream has no direct gets), write a schedule, and take the ticks from
// the shared consumer that admin provisions with the stream (look it up,
// pull, ack). A schedule is deleted with a Nats-Rollup published to its
// own subject, which purges it (the server drops its timer with it) and
// leaves a marker that expires (Nats-TTL); not with STREAM.PURGE, which
// stays admin-only (adminOnly): a purge request's subject filter is in
// its body, which no permission can bound, so the grant would let a
// gateway empty the stream. Ticks (schedules.fire.*) are written by the
// server's scheduler only: publishing one is denied, so no role can forge
// a tick, which becomes a task owned by the schedule's owner.
var useSchedules = []string{
	jsAPI("STREAM.MSG.GET." + task.ScheduleStream),
	task.ScheduleDefPrefix + "*",
	jsAPI("CONSUMER.INFO." + task.ScheduleStream + "." + task.ScheduleConsumer),
	jsAPI("CONSUMER.MSG.NEXT." + task.ScheduleStream + "." + task.ScheduleConsumer),
	"$JS.ACK." + task.ScheduleStream + "." + task.ScheduleConsumer + ".>",
	"$JS.ACK.*.*." + task.ScheduleStream + "." + task.ScheduleConsumer + ".>",
}

// cacheBucket is every subject that reads, writes or administers the
// cache bucket: its KV subjects and each JetStream API subject naming
// its stream, whatever the verb (STREAM.INFO.KV_cache,
// DIRECT.GET.KV_cache.…, STREAM.MSG.GET.KV_cache, CONSUMER.CREATE.KV_cache.…,
// CONSUMER.MSG.NEXT.KV_cache.…), and its flow control.
var cacheBucket = []string{
	"$KV." + cache.Bucket + ".>",
	jsAPI("*.*." + kvCache), jsAPI("*.*." + kvCache + ".>"),
	jsAPI("*.*.*." + kvCache), jsAPI("*.*.*." + kvCache + ".>"),
	"$JS.FC." + kvCache + ".>", "$JS.FC.*.*." + kvCache + ".>",
}

// Table returns the permissions of every role, the one source of truth
// for both the embedded server (Users) and the clustered configs
// (RenderAuthorization). Subjects come from the constants of the packages
// that own them.
func Table() []Grant {
	taskStreams := []string{task.DelayedStream, task.Stream, task.DLQStream, task.ScheduleStream, task.ExecStream, kvTasks}
	// The task streams and bucket are provisioned by admin (`up` before
	// the roles start, `scalelab tasks provision` elsewhere, with
	// internal/task.Provision). Gateways and workers only use them: they
	// look them up (task.Open waits until they exist) and read and write
	// records, but can neither create nor update them. An update that
	// shrinks a stream's limits purges it, around the admin-only purge.
	useTasks := []string{jsAPI("INFO")}
	for _, s := range taskStreams {
		useTasks = append(useTasks, jsAPI("STREAM.INFO."+s))
	}
	useTasks = append(useTasks, kvAccess(task.Bucket)...)
	// What only a stream's provisioner may do, restated as a deny so that
	// a later, broader allow cannot give it to a runtime role.
	provisionAny := []string{jsAPI("STREAM.CREATE.>"), jsAPI("STREAM.UPDATE.>")}
	var provisionTasks []string
	for _, s := range taskStreams {
		provisionTasks = append(provisionTasks, jsAPI("STREAM.CREATE."+s), jsAPI("STREAM.UPDATE."+s))
	}

	gateway := Grant{Role: RoleGateway}
	gateway.PubAllow = concat(
		// The gateways' cache-client service answers the invalidation
		// requests and pings of its peers and of cachesvc, and the stats
		// requests of cachesvc and the dashboard.
		repliesTo(cache.ServiceName, RoleGateway, RoleCacheSvc, RoleBalancer),
		useTasks,
		useRegistry,
		// Submit (now, or as a schedule on the delayed stream) and cancel.
		[]string{task.SubjectPrefix + ">", task.DelayedAtPrefix + ">", task.CancelSubjectPrefix + "*"},
		// Recurring schedules and their ticks.
		useSchedules,
		// Retry and purge of dead tasks.
		gatewayDLQ,
		// GET /queues (gateway/queues_routes.go): a queue's depth from its
		// consumer's info, and its oldest task's age from the first
		// message on its subjects. Reading a task message gives a gateway
		// nothing it lacks: it wrote the message, and reads and writes
		// every task record. It still cannot take tasks (consumeTasks,
		// denied: no consumer, no pull, no ack).
		[]string{jsAPI("CONSUMER.INFO." + task.Stream + ".*"), jsAPI("STREAM.MSG.GET." + task.Stream)},
		// The task index (GET /tasks, the event streams) watches the
		// tasks bucket: an ordered consumer, with flow control.
		kvWatch(task.Bucket),
		// The cache tiers: the bucket, the KV watch of the near-cache (an
		// ordered push consumer, recreated and deleted by the client, with
		// flow control), and invalidation broadcasts with their peer view.
		kvAccess(cache.Bucket),
		[]string{
			jsAPI("CONSUMER.CREATE." + kvCache), jsAPI("CONSUMER.CREATE." + kvCache + ".>"),
			jsAPI("CONSUMER.INFO." + kvCache + ".*"), jsAPI("CONSUMER.DELETE." + kvCache + ".*"),
			"$JS.FC." + kvCache + ".>", "$JS.FC.*.*." + kvCache + ".>",
			cache.SubjectInvalidate, "$SRV.PING." + cache.ServiceName,
			// A known process slow to answer is pinged again on its own.
			"$SRV.PING." + cache.ServiceName + ".*",
		},
		// Services: the business logic, and dbsvc's reads, item writes and
		// the login lookup.
		[]string{
			wire.ProcessSubject,
			wire.DBData, wire.DBItemGet, wire.DBItemCreate, wire.DBItemUpdate,
			wire.DBItemPatch, wire.DBItemList, wire.DBItemDelete, wire.DBUserGet,
		},
	)
	gateway.PubDeny = concat(without(adminOnly, msgDeleteAny), gatewayMsgDeleteDeny, consumeTasks, provisionAny, []string{task.ScheduleFirePrefix + ">"})
	gateway.SubAllow = concat([]string{inbox(RoleGateway), cache.SubjectInvalidate}, microService(cache.ServiceName))
	gateway.SubDeny = []string{task.SubjectPrefix + ">"}

	wk := Grant{Role: RoleWorker}
	wk.PubAllow = concat(
		// svc.process is called by the gateways; its stats by the
		// dashboard.
		repliesTo(wire.ProcessService, RoleGateway, RoleBalancer),
		useTasks,
		// Announce the types it serves and itself as alive.
		useRegistry,
		// The queues' durable consumers (task.QueueConsumer: workers-<queue>):
		// create or update them, look them up, pull, and
		// ack/nak/in-progress/term; and read the oldest message of a
		// queue (its age, for the metrics). Any consumer name on TASKS,
		// not workers-*: queue names are open (a program's WithQueue),
		// and a subject wildcard only stands for whole tokens. A worker
		// already takes every task, so this gives it nothing over them;
		// deleting a consumer stays admin's (adminOnly).
		[]string{
			jsAPI("CONSUMER.CREATE." + task.Stream + ".*"),
			jsAPI("CONSUMER.CREATE." + task.Stream + ".*.>"),
			jsAPI("CONSUMER.DURABLE.CREATE." + task.Stream + ".*"),
			jsAPI("CONSUMER.INFO." + task.Stream + ".*"),
			jsAPI("CONSUMER.MSG.NEXT." + task.Stream + ".*"),
			jsAPI("STREAM.MSG.GET." + task.Stream),
			"$JS.ACK." + task.Stream + ".*.>",
			"$JS.ACK.*.*." + task.Stream + ".*.>",
			task.DLQSubjectPrefix + ">",
		},
		// The tally task's record of each of its runs (task.RecordExec).
		[]string{task.ExecFirstPrefix + ">", task.ExecAgainPrefix + ">"},
	)
	// Workers run tasks; they have no business with the cache or the
	// database.
	wk.PubDeny = concat(adminOnly, cacheBucket, []string{"db.>"}, provisionAny)
	wk.SubAllow = concat([]string{inbox(RoleWorker), wire.ProcessSubject, task.CancelSubjectPrefix + "*"},
		microService(wire.ProcessService))
	wk.SubDeny = []string{"$KV." + cache.Bucket + ".>"}

	db := Grant{Role: RoleDBSvc}
	// dbsvc only answers: no JetStream, no requests of its own. Its
	// callers are the gateways (reads, item writes, logins) and admin
	// (`scalelab users add`), plus the dashboard's stats.
	db.PubAllow = repliesTo(wire.DBService, RoleGateway, RoleBalancer)
	db.PubDeny = concat(adminOnly, []string{"$JS.>", "$KV.>"})
	db.SubAllow = concat([]string{inbox(RoleDBSvc), "db.>"}, microService(wire.DBService))

	cs := Grant{Role: RoleCacheSvc}
	cs.PubAllow = concat(
		[]string{jsAPI("INFO")},
		streamAdmin(kvCache),
		kvAccess(cache.Bucket),
		// DELETE /cache (flush) purges the bucket's stream: one request
		// however many keys. The only purge a role may do.
		[]string{jsAPI("STREAM.PURGE." + kvCache)},
		// Broadcast writes to the gateways' near-caches; GET /cache
		// gathers their stats.
		[]string{cache.SubjectInvalidate, "$SRV.PING." + cache.ServiceName, "$SRV.PING." + cache.ServiceName + ".*",
			"$SRV.STATS." + cache.ServiceName},
	)
	// cachesvc owns the cache bucket and provisions it; the task streams
	// are not its own. It answers nothing.
	cs.PubDeny = concat(adminOnly, []string{task.SubjectPrefix + ">", "$KV." + task.Bucket + ".>", "db.>", anyInbox},
		provisionTasks)
	cs.SubAllow = []string{inbox(RoleCacheSvc)}

	// The balancer's dashboard reads figures and nothing else: the stats
	// of the micro services (dbsvc's queries, the workers' tasks, the
	// gateways' cache tiers) and the info of the task streams, the queues'
	// consumers (listed: any queue a worker serves) and the cache bucket's
	// stream (its size, not its keys). The age of a queue's oldest task
	// comes from the workers' stats: reading it here would mean reading
	// task messages.
	// No responder rights, no JetStream writes, no KV.
	bal := Grant{Role: RoleBalancer}
	bal.PubAllow = []string{
		"$SRV.STATS." + wire.DBService, "$SRV.STATS." + wire.ProcessService, "$SRV.STATS." + cache.ServiceName,
		jsAPI("STREAM.INFO." + task.Stream), jsAPI("STREAM.INFO." + task.DLQStream),
		jsAPI("CONSUMER.LIST." + task.Stream), jsAPI("CONSUMER.INFO." + task.Stream + ".*"),
		jsAPI("STREAM.INFO." + kvCache),
	}
	bal.PubDeny = concat(adminOnly, consumeTasks, []string{task.SubjectPrefix + ">", "$KV.>", "db.>", anyInbox}, provisionAny)
	bal.SubAllow = []string{inbox(RoleBalancer)}

	// An in-cluster client submits as the gateway does (the record in the
	// tasks bucket, then the message, now or as a schedule), reads and
	// lists records (List: a KV key listing, an ordered consumer on the
	// bucket), validates against the registry (read only: it binds both
	// of its buckets) and cancels. It neither pulls tasks nor writes the
	// registry, and has no business with the cache or the database.
	cl := Grant{Role: RoleClient}
	cl.PubAllow = concat(
		useTasks,
		kvWatch(task.Bucket),
		readKV(task.RegistryBucket), kvWatch(task.RegistryBucket), readKV(task.WorkersBucket),
		[]string{task.SubjectPrefix + ">", task.DelayedAtPrefix + ">", task.CancelSubjectPrefix + "*"},
	)
	cl.PubDeny = concat(adminOnly, consumeTasks, provisionAny, cacheBucket,
		[]string{"db.>", "$KV." + task.RegistryBucket + ".>", "$KV." + task.WorkersBucket + ".>", anyInbox})
	cl.SubAllow = []string{inbox(RoleClient)}
	cl.SubDeny = []string{task.SubjectPrefix + ">", "$KV." + cache.Bucket + ".>"}

	// Operators can do anything: inspect and repair streams, retry dead
	// letters, add users.
	admin := Grant{Role: RoleAdmin, PubAllow: []string{">"}, SubAllow: []string{">"}}

	return []Grant{gateway, wk, db, cs, bal, cl, admin}
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// permissions converts g to the server's form. Admin, with no limits,
// gets nil: the same as an authorization block without permissions.
func (g Grant) permissions() *server.Permissions {
	if g.Role == RoleAdmin {
		return nil
	}
	sp := func(allow, deny []string) *server.SubjectPermission {
		return &server.SubjectPermission{Allow: slices.Clone(allow), Deny: slices.Clone(deny)}
	}
	return &server.Permissions{Publish: sp(g.PubAllow, g.PubDeny), Subscribe: sp(g.SubAllow, g.SubDeny)}
}

// Users returns the table as nats-server users for server.Options.Users,
// with the given passwords. A role without a password is left out, so it
// cannot log in.
func Users(passwords map[Role]string) []*server.User {
	var out []*server.User
	for _, g := range Table() {
		pw, ok := passwords[g.Role]
		if !ok || pw == "" {
			continue
		}
		out = append(out, &server.User{Username: string(g.Role), Password: pw, Permissions: g.permissions()})
	}
	return out
}

// RandomPasswords returns a fresh random password for every role, for a
// run of `up`. The passwords are letters and digits and start with a
// letter, so that a config's $SCALELAB_NATS_<ROLE>_PASSWORD reference
// (which nats-server parses as a value) reads them as strings.
func RandomPasswords() (map[Role]string, error) {
	out := map[Role]string{}
	for _, r := range Roles() {
		pw, err := randomPassword()
		if err != nil {
			return nil, err
		}
		out[r] = pw
	}
	return out, nil
}

// passwordChars are the characters of a generated password.
const passwordChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomPassword is 32 characters: about 190 bits.
func randomPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("nats password: %w", err)
	}
	for i := range b {
		// 62 letters and digits (a byte mod 62 is close enough to uniform
		// for a password of this length); the first is a letter.
		n := len(passwordChars)
		if i == 0 {
			n = 52
		}
		b[i] = passwordChars[int(b[i])%n]
	}
	return string(b), nil
}

// RenderAuthorization renders the table as a nats-server config block,
// `authorization { users = [...] }`, with each password a reference to
// the environment variable PasswordEnv(role), for the clustered configs
// (include it with `include authorization.conf`). The server refuses to
// start when one of the variables is unset.
func RenderAuthorization() string {
	var b strings.Builder
	b.WriteString(`# Generated from natsconf/permissions.go: do not edit. Regenerate with
#
#   go generate ./natsconf
#
# One NATS user per scalelab role, with least-privilege permissions (see
# permissions.go for why each subject is there). Each password comes from
# the environment of the nats-server process:
`)
	for _, r := range Roles() {
		fmt.Fprintf(&b, "#   %-8s  $%s\n", r, PasswordEnv(r))
	}
	b.WriteString(`# Use letters and digits, starting with a letter: the server parses the
# variable's value as a config value.

authorization {
  users = [
`)
	list := func(indent, key string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s%s: [\n", indent, key)
		for _, s := range subjects {
			fmt.Fprintf(&b, "%s  %q\n", indent, s)
		}
		fmt.Fprintf(&b, "%s]\n", indent)
	}
	for _, g := range Table() {
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n", g.Role, PasswordEnv(g.Role))
		if p := g.permissions(); p != nil {
			b.WriteString("      permissions: {\n        publish: {\n")
			list("          ", "allow", p.Publish.Allow)
			list("          ", "deny", p.Publish.Deny)
			b.WriteString("        }\n        subscribe: {\n")
			list("          ", "allow", p.Subscribe.Allow)
			list("          ", "deny", p.Subscribe.Deny)
			b.WriteString("        }\n      }\n")
		}
		b.WriteString("    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}
