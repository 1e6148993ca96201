package dbsvc

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // registers the pure-Go driver "sqlite", so CGO_ENABLED=0 builds work
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrNotFound is returned (wrapped) when an item does not exist. The service
// answers it with apperr.NotFound; callers check it with errors.Is.
var ErrNotFound = errors.New("dbsvc: not found")

// ReportMessage is Report.Message, the text the lab's /db endpoint returned.
const ReportMessage = "Fetched fresh data from DB"

// Item is one row of the items table, as served by GET /items/{id} and the
// wire.DBItemGet endpoint.
type Item struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
	// Version is 1 for a new item and goes up by one with every write, so
	// a writer can say which state it read (the gateway's ETag and
	// If-Match). It is part of the JSON the caches hold, so a cached read
	// has it without asking the database.
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ItemUpdate is the complete new state of an item: what POST /items
// creates and PUT /items/{id} replaces, once ItemFields.Complete has found
// every field in the body.
type ItemUpdate struct {
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
}

// ItemPage is one page of items in id order: the reply of wire.DBItemList
// and of GET /items.
type ItemPage struct {
	// Items holds up to the requested limit of items, lowest id first; it is
	// empty, never null, past the last item.
	Items []Item `json:"items"`
	// NextAfterID is the after_id of the next page: the id of the last item
	// when the page is full, so there may be more; 0 (omitted) when the page
	// is not full, so there are no more. A full last page is followed by an
	// empty one.
	NextAfterID int64 `json:"next_after_id,omitempty"`
}

// DefaultListLimit is the page size of a list request that gives no limit.
const DefaultListLimit = 20

// MaxListLimit is the largest page size a list request may ask for.
const MaxListLimit = 100

// MaxNameLen is the longest item name ItemUpdate.Validate accepts, in bytes.
const MaxNameLen = 200

// Validate reports the first problem with u, or nil: the range checks of
// ItemFields.Validate, on every field.
func (u ItemUpdate) Validate() error {
	return u.fields().Validate()
}

// Report is the result of the expensive query, "the data report": sales
// aggregated by region and the best-selling items. The gateway caches it as
// the data of GET /data.
type Report struct {
	// Message is ReportMessage, as in the lab.
	Message string `json:"message"`
	// RowsScanned is the number of sales rows the report aggregated.
	RowsScanned int64 `json:"rows_scanned"`
	// Regions holds one total per region, highest revenue first.
	Regions []RegionTotal `json:"regions"`
	// TopItems holds the TopItemsLimit items with the highest revenue.
	TopItems []ItemTotal `json:"top_items"`
	// GeneratedAt is when the query ran; a cached report shows its age.
	GeneratedAt time.Time `json:"generated_at"`
	// QueryMS is how long the query took, in milliseconds.
	QueryMS float64 `json:"query_ms"`
}

// RegionTotal is the sales of one region.
type RegionTotal struct {
	Region       string  `json:"region"`
	Sales        int64   `json:"sales"`
	Units        int64   `json:"units"`
	RevenueCents int64   `json:"revenue_cents"`
	AvgCents     float64 `json:"avg_cents"`
}

// ItemTotal is the sales of one item.
type ItemTotal struct {
	ItemID       int64  `json:"item_id"`
	Name         string `json:"name"`
	Sales        int64  `json:"sales"`
	Units        int64  `json:"units"`
	RevenueCents int64  `json:"revenue_cents"`
}

// TopItemsLimit is the length of Report.TopItems.
const TopItemsLimit = 10

// SeedItems is the number of rows in the items table of a new database.
const SeedItems = 1000

// Query names, the values of the query label of the metrics.
const (
	queryData       = "data"
	queryItemGet    = "item_get"
	queryItemCreate = "item_create"
	queryItemUpdate = "item_update"
	queryItemPatch  = "item_patch"
	queryItemList   = "item_list"
	queryItemDelete = "item_delete"
)

// schemaVersion is stored in meta; bump it with a migration (migrations)
// when the schema changes.
const schemaVersion = 2

// migrations[v] takes a database of schema version v to v+1, within the
// transaction of migrate; schema creates a new database at schemaVersion
// directly. So a ./data written by an older scalelab keeps its data.
var migrations = map[int][]string{
	// 2: items get a version (Item.Version), 1 for every existing item. It
	// is the last column, as in schema. And the table of the keys of
	// repeatable creates, with its index (empty: no create had a key).
	// migrate runs schema's CREATE ... IF NOT EXISTS before the migrations,
	// so on a version 1 database these two find the table and index made;
	// they are here so that the step says all that version 2 adds.
	1: {
		`ALTER TABLE items ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)`,
		itemCreatesTableSQL,
		itemCreatesIndexSQL,
	},
}

// itemCreatesTableSQL creates the table of the keys of repeatable creates
// (CreateKey, store.CreateItem), one row per key: the hash of the body it
// created an item from, that item's id, and when the item was deleted, if
// it was (NULL while it exists). The row outlives its item, so that a
// repeat after a delete is told so rather than creating the item again,
// and deleted_at tells a deleted item from a new one that SQLite gave the
// same id (it reuses the highest id once that item is deleted).
const itemCreatesTableSQL = `CREATE TABLE IF NOT EXISTS item_creates (
		key        TEXT    PRIMARY KEY,
		body_hash  TEXT    NOT NULL,
		item_id    INTEGER NOT NULL,
		created_at TEXT    NOT NULL,
		deleted_at TEXT
	)`

// itemCreatesIndexSQL indexes item_creates by item, for DeleteItem, which
// marks the rows of the item it deletes.
const itemCreatesIndexSQL = `CREATE INDEX IF NOT EXISTS item_creates_item ON item_creates (item_id)`

// schema creates the tables. The sales table deliberately has no index besides
// its primary key: the report must scan it, which is what makes it expensive.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS meta (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS items (
		id          INTEGER PRIMARY KEY,
		name        TEXT    NOT NULL,
		price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
		stock       INTEGER NOT NULL CHECK (stock >= 0),
		updated_at  TEXT    NOT NULL,
		version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
	)`,
	`CREATE TABLE IF NOT EXISTS sales (
		id           INTEGER PRIMARY KEY,
		item_id      INTEGER NOT NULL REFERENCES items(id),
		region       TEXT    NOT NULL,
		quantity     INTEGER NOT NULL,
		amount_cents INTEGER NOT NULL,
		sold_at      TEXT    NOT NULL
	)`,
	usersTableSQL,
	itemCreatesTableSQL,
	itemCreatesIndexSQL,
}

// seedItemsSQL inserts SeedItems items with names and prices derived from
// the row number, so every new database holds the same data.
const seedItemsSQL = `
INSERT INTO items (id, name, price_cents, stock, updated_at)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1)
SELECT n,
	json_extract('["Red","Blue","Green","Silver","Golden","Tiny","Heavy","Smart","Quiet","Rapid"]', '$[' || (n % 10) || ']')
		|| ' ' ||
	json_extract('["Widget","Gadget","Sprocket","Gizmo","Lamp","Kettle","Drone","Router","Keyboard","Speaker"]', '$[' || ((n / 10) % 10) || ']')
		|| ' ' || printf('%04d', n),
	199 + (n * 7919) % 49800,
	(n * 104729) % 500,
	strftime('%Y-%m-%dT%H:%M:%SZ', 1735689600 + n * 3600, 'unixepoch')
FROM seq`

// seedSalesSQL inserts ?1 sales in one statement. The values come from two
// multiplicative hashes of the row number (Knuth's and xxHash's primes, mod
// 2^32): deterministic, but spread enough that the aggregates look real.
// item_id is the product of two uniform values, so low ids sell more and the
// top-items list is stable.
const seedSalesSQL = `
INSERT INTO sales (id, item_id, region, quantity, amount_cents, sold_at)
WITH RECURSIVE seq(n) AS (SELECT 1 WHERE ?1 > 0 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1),
h AS (
	SELECT n,
		(n * 2654435761) % 4294967296 AS h1,
		(n * 2246822519 + 3266489917) % 4294967296 AS h2
	FROM seq
),
r AS (
	SELECT n,
		1 + (((h1 >> 4) % ?2) * ((h1 >> 16) % ?2)) / ?2 AS item_id,
		json_extract('["north","south","east","west","central","islands","mountains","coast"]', '$[' || ((h2 >> 7) % 8) || ']') AS region,
		1 + (h2 >> 20) % 5 AS quantity,
		1735689600 + h2 % 31536000 AS sold_unix
	FROM h
)
SELECT r.n, r.item_id, r.region, r.quantity, r.quantity * i.price_cents,
	strftime('%Y-%m-%dT%H:%M:%SZ', r.sold_unix, 'unixepoch')
FROM r JOIN items i ON i.id = r.item_id`

// reportIndexSQL is the one secondary index on sales. It covers every column
// the report reads, in the order of its first GROUP BY, so the report streams
// through 300,000 index entries instead of sorting the table; without it the
// two aggregates take most of a second. With it the report still reads every
// row: it stays an honestly expensive query, just not an absurd one.
const reportIndexSQL = `CREATE INDEX IF NOT EXISTS sales_report ON sales (item_id, region, quantity, amount_cents)`

// reportSQL is the data report in one statement, so that one scan of sales
// feeds both parts and both see the same data. It returns kind 'region' rows
// (every region) and kind 'item' rows (the ?1 best-selling items), in no
// particular order.
const reportSQL = `
WITH per AS MATERIALIZED (
	SELECT item_id, region, COUNT(*) AS sales, SUM(quantity) AS units, SUM(amount_cents) AS revenue
	FROM sales
	GROUP BY item_id, region
),
top AS (
	SELECT item_id, SUM(sales) AS sales, SUM(units) AS units, SUM(revenue) AS revenue
	FROM per
	GROUP BY item_id
	ORDER BY revenue DESC, item_id
	LIMIT ?1
)
SELECT 'region', region, 0, '', SUM(sales), SUM(units), SUM(revenue)
FROM per
GROUP BY region
UNION ALL
SELECT 'item', '', t.item_id, i.name, t.sales, t.units, t.revenue
FROM top t JOIN items i ON i.id = t.item_id`

// store is the SQLite database. It is safe for concurrent use.
type store struct {
	db      *sql.DB
	path    string
	timeout time.Duration
	// seeded tells whether this open created and seeded the database.
	seeded bool
	// queries counts every query; see Config.Queries.
	queries *atomic.Int64
	metrics *metrics // nil: no metrics
}

// pageSize is the page size of the databases dbsvc creates: SQLite's
// default, which it never changes. MaxBytes is counted in these pages.
const pageSize = 4096

// errFull is the cause of a write SQLite refused because the database is
// full (SQLITE_FULL): at its max_page_count (Config.MaxDBBytes), or on a
// disk with no space left.
var errFull = errors.New("dbsvc: the database is full")

// fullError returns err wrapped with errFull if SQLite refused it as
// SQLITE_FULL, else err. The statement was rolled back: nothing of it is
// written, and the connection stays usable.
func fullError(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return fmt.Errorf("%w: %w", errFull, err)
	}
	return err
}

// storeConfig holds what openStore needs.
type storeConfig struct {
	Path         string
	SeedRows     int
	QueryTimeout time.Duration
	MaxOpenConns int
	MaxBytes     int64         // Config.MaxDBBytes; 0: no cap
	Queries      *atomic.Int64 // nil: a counter of the store's own
	Metrics      *metrics      // nil: no metrics
}

// openStore opens (creating if needed) the database at cfg.Path, creates the
// schema and, on first start only, seeds it. A database that was seeded
// before keeps its data, whatever cfg.SeedRows says now.
func openStore(ctx context.Context, cfg storeConfig, log *slog.Logger) (*store, error) {
	// The file holds the users' password hashes: the directory and the
	// file are for the owner alone.
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := createPrivate(cfg.Path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)") // safe with WAL: a crash loses at most the last commits, never the file
	q.Add("_pragma", "foreign_keys(1)")
	if cfg.MaxBytes > 0 {
		// Per connection, so in the DSN, which every new connection
		// runs. SQLite never lowers it under the file's current size.
		q.Add("_pragma", fmt.Sprintf("max_page_count(%d)", max(cfg.MaxBytes/pageSize, 1)))
	}
	// Write transactions take the write lock when they begin, not at their
	// first write: a transaction that reads an item and then writes it
	// (the conditional writes) would otherwise fail with SQLITE_BUSY when
	// another write committed in between, instead of waiting its turn.
	// Read-only transactions are unaffected.
	q.Add("_txlock", "immediate")
	db, err := sql.Open("sqlite", cfg.Path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open db %s: %w", cfg.Path, err)
	}
	// Every connection runs the pragmas above; keep a few idle so requests
	// do not pay for that.
	db.SetMaxOpenConns(cfg.MaxOpenConns)
	db.SetMaxIdleConns(cfg.MaxOpenConns)
	s := &store{db: db, path: cfg.Path, timeout: cfg.QueryTimeout, queries: cfg.Queries, metrics: cfg.Metrics}
	if s.queries == nil {
		s.queries = new(atomic.Int64)
	}
	if err := s.migrate(ctx, cfg.SeedRows, log); err != nil {
		_ = db.Close()
		return nil, err
	}
	// SQLite creates the WAL and shared-memory files with the database's
	// mode; ones left by a run before the database was private keep
	// theirs, so tighten them too.
	for _, f := range []string{cfg.Path + "-wal", cfg.Path + "-shm"} {
		if err := os.Chmod(f, privateFileMode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = db.Close()
			return nil, fmt.Errorf("open db %s: %w", cfg.Path, err)
		}
	}
	return s, nil
}

// privateFileMode is the mode of the database and its WAL and
// shared-memory files.
const privateFileMode = 0o600

// createPrivate creates the database file at path empty with
// privateFileMode before SQLite opens it (SQLite would create it with
// 0644 less the umask), or makes an existing one private.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, privateFileMode)
	if err != nil {
		return fmt.Errorf("create db %s: %w", path, err)
	}
	// Chmod too: the umask may have taken bits away (harmless), and an
	// existing file keeps its mode on open.
	if err := errors.Join(f.Chmod(privateFileMode), f.Close()); err != nil {
		return fmt.Errorf("create db %s: %w", path, err)
	}
	return nil
}

// migrate creates the schema and seeds a new database, all in one IMMEDIATE
// transaction, so that a crash mid-seed leaves an empty file that the next
// start seeds again, and two processes starting at once do not both seed.
func (s *store) migrate(ctx context.Context, seedRows int, log *slog.Logger) (err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open db %s: %w", s.path, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("begin migration of %s: %w", s.path, err)
	}
	defer func() {
		if err != nil {
			// The ctx may be what failed; the rollback must still run.
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	for _, stmt := range schema {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create schema in %s: %w", s.path, err)
		}
	}

	var version string
	err = conn.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'schema_version'`).Scan(&version)
	switch {
	case err == nil:
		if err := s.upgrade(ctx, conn, version, log); err != nil {
			return err
		}
		var rows int64
		if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM sales`).Scan(&rows); err != nil {
			return fmt.Errorf("count sales in %s: %w", s.path, err)
		}
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			return fmt.Errorf("commit migration of %s: %w", s.path, err)
		}
		log.Info("database opened", "path", s.path, "sales_rows", rows, "seeded", false)
		if rows != int64(seedRows) {
			log.Info("--seed-rows applies only to a new database; remove the file to seed again",
				"seed_rows", seedRows, "path", s.path)
		}
		return nil
	case errors.Is(err, sql.ErrNoRows):
	default:
		return fmt.Errorf("read schema version of %s: %w", s.path, err)
	}

	start := time.Now()
	if _, err := conn.ExecContext(ctx, seedItemsSQL, SeedItems); err != nil {
		return fmt.Errorf("seed items in %s: %w", s.path, err)
	}
	if _, err := conn.ExecContext(ctx, seedSalesSQL, seedRows, SeedItems); err != nil {
		return fmt.Errorf("seed sales in %s: %w", s.path, err)
	}
	// After the rows, not before: building the index once is faster than
	// updating it on every insert.
	if _, err := conn.ExecContext(ctx, reportIndexSQL); err != nil {
		return fmt.Errorf("index sales in %s: %w", s.path, err)
	}
	meta := map[string]string{
		"schema_version": strconv.Itoa(schemaVersion),
		"seed_rows":      strconv.Itoa(seedRows),
		"seeded_at":      time.Now().UTC().Format(time.RFC3339),
	}
	for k, v := range meta {
		if _, err := conn.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?1, ?2)`, k, v); err != nil {
			return fmt.Errorf("write meta %s in %s: %w", k, s.path, err)
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("commit seed of %s: %w", s.path, err)
	}
	s.seeded = true
	log.Info("database created and seeded", "path", s.path, "items", SeedItems, "sales_rows", seedRows,
		"took_ms", time.Since(start).Milliseconds())
	return nil
}

// upgrade runs the migrations that take a database of schema version
// version (as meta holds it) to schemaVersion, on conn, in migrate's
// transaction. A version it does not know, such as a newer scalelab's, is
// an error: that database is left as it is.
func (s *store) upgrade(ctx context.Context, conn *sql.Conn, version string, log *slog.Logger) error {
	from, err := strconv.Atoi(version)
	if err != nil || from < 1 || from > schemaVersion {
		return fmt.Errorf("open db %s: schema version %s, want %d or older", s.path, version, schemaVersion)
	}
	if from == schemaVersion {
		return nil
	}
	for v := from; v < schemaVersion; v++ {
		for _, stmt := range migrations[v] {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate %s from schema version %d: %w", s.path, v, err)
			}
		}
	}
	if _, err := conn.ExecContext(ctx, `UPDATE meta SET value = ?1 WHERE key = 'schema_version'`, strconv.Itoa(schemaVersion)); err != nil {
		return fmt.Errorf("migrate %s: write schema version: %w", s.path, err)
	}
	log.Info("database migrated", "path", s.path, "from_schema", from, "to_schema", schemaVersion)
	return nil
}

// Close closes the database. Queries still running fail.
func (s *store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close db %s: %w", s.path, err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping db %s: %w", s.path, err)
	}
	return nil
}

// Queries returns how many queries the store has run.
func (s *store) Queries() int64 { return s.queries.Load() }

// observe counts one query and records its duration.
func (s *store) observe(query string, start time.Time) {
	s.queries.Add(1)
	s.metrics.observe(query, time.Since(start))
}

// startQuery starts the query named query (the metrics' label). It returns
// ctx bounded by the query timeout, and end, which releases that timeout and
// observes the query; defer end.
func (s *store) startQuery(ctx context.Context, query string) (_ context.Context, end func()) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return ctx, func() {
		cancel()
		s.observe(query, start)
	}
}

// Report runs the data report. It returns an error if the query fails or
// takes longer than the query timeout.
func (s *store) Report(ctx context.Context) (Report, error) {
	start := time.Now()
	defer s.observe(queryData, start)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	rows, err := s.db.QueryContext(ctx, reportSQL, TopItemsLimit)
	if err != nil {
		return Report{}, fmt.Errorf("run report: %w", err)
	}
	defer rows.Close()
	rep := Report{Message: ReportMessage, Regions: []RegionTotal{}, TopItems: []ItemTotal{}}
	for rows.Next() {
		var (
			kind, region, name    string
			itemID                int64
			sales, units, revenue int64
		)
		if err := rows.Scan(&kind, &region, &itemID, &name, &sales, &units, &revenue); err != nil {
			return Report{}, fmt.Errorf("read report: %w", err)
		}
		switch kind {
		case "region":
			rep.RowsScanned += sales
			rep.Regions = append(rep.Regions, RegionTotal{
				Region: region, Sales: sales, Units: units, RevenueCents: revenue,
				AvgCents: float64(revenue) / float64(sales),
			})
		case "item":
			rep.TopItems = append(rep.TopItems, ItemTotal{
				ItemID: itemID, Name: name, Sales: sales, Units: units, RevenueCents: revenue,
			})
		}
	}
	if err := rows.Err(); err != nil {
		return Report{}, fmt.Errorf("read report: %w", err)
	}
	// Highest revenue first; ties in a stable order.
	slices.SortFunc(rep.Regions, func(a, b RegionTotal) int {
		if c := cmp.Compare(b.RevenueCents, a.RevenueCents); c != 0 {
			return c
		}
		return cmp.Compare(a.Region, b.Region)
	})
	slices.SortFunc(rep.TopItems, func(a, b ItemTotal) int {
		if c := cmp.Compare(b.RevenueCents, a.RevenueCents); c != 0 {
			return c
		}
		return cmp.Compare(a.ItemID, b.ItemID)
	})
	rep.GeneratedAt = time.Now().UTC()
	rep.QueryMS = float64(time.Since(start).Microseconds()) / 1000
	return rep, nil
}

// itemColumns are the columns of an item row, in the order scanItem reads
// them.
const itemColumns = `id, name, price_cents, stock, version, updated_at`

// itemSQL reads item ?1.
const itemSQL = `SELECT ` + itemColumns + ` FROM items WHERE id = ?1`

// Item returns the item with the given id, or an error wrapping ErrNotFound.
func (s *store) Item(ctx context.Context, id int64) (Item, error) {
	return s.queryItem(ctx, queryItemGet, "get item", id, itemSQL, id)
}

// queryItem runs sqlText with args, a statement that returns the row of
// item id, as the query named query; what says what it does, for the error.
// No row is an error wrapping ErrNotFound.
func (s *store) queryItem(ctx context.Context, query, what string, id int64, sqlText string, args ...any) (Item, error) {
	ctx, end := s.startQuery(ctx, query)
	defer end()
	it, err := scanItem(s.db.QueryRowContext(ctx, sqlText, args...))
	if err != nil {
		return Item{}, fmt.Errorf("%s %d: %w", what, id, err)
	}
	return it, nil
}

// ListItems returns up to limit items with ids above afterID, lowest id
// first. The caller validates afterID and limit.
func (s *store) ListItems(ctx context.Context, afterID int64, limit int) (ItemPage, error) {
	ctx, end := s.startQuery(ctx, queryItemList)
	defer end()
	rows, err := s.db.QueryContext(ctx, `
SELECT `+itemColumns+` FROM items
WHERE id > ?1
ORDER BY id
LIMIT ?2`, afterID, limit)
	if err != nil {
		return ItemPage{}, fmt.Errorf("list items after %d: %w", afterID, err)
	}
	defer rows.Close()
	page := ItemPage{Items: []Item{}}
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return ItemPage{}, fmt.Errorf("list items after %d: %w", afterID, err)
		}
		page.Items = append(page.Items, it)
	}
	if err := rows.Err(); err != nil {
		return ItemPage{}, fmt.Errorf("list items after %d: %w", afterID, err)
	}
	if len(page.Items) == limit && limit > 0 {
		page.NextAfterID = page.Items[len(page.Items)-1].ID
	}
	return page, nil
}

// rowScanner is what scanItem reads from: a *sql.Row or a *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanItem reads an item row; no row (from a *sql.Row) is ErrNotFound.
func scanItem(row rowScanner) (Item, error) {
	var it Item
	var updated string
	if err := row.Scan(&it.ID, &it.Name, &it.PriceCents, &it.Stock, &it.Version, &updated); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Item{}, ErrNotFound
		}
		return Item{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, updated)
	if err != nil {
		return Item{}, fmt.Errorf("parse updated_at %q: %w", updated, err)
	}
	it.UpdatedAt = t
	return it, nil
}
