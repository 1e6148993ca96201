package dbsvc

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scalelab/scalelab/internal/envflag"
)

// MaxSeedRows bounds --seed-rows: the seed's pseudo-random arithmetic stays
// within 64-bit integers well past it, and a bigger table only makes start-up
// slow without making the demo any clearer.
const MaxSeedRows = 50_000_000

// DBFile is the name of the SQLite file inside Config.DataDir.
const DBFile = "scalelab.db"

// Config holds the settings of the dbsvc role.
type Config struct {
	// Addr is the HTTP address (GET /db, GET /items, GET /items/{id}, ops routes).
	Addr string
	// Listener, when set, is served instead of listening on Addr; `up` and
	// tests bind the port themselves so that they know the real address.
	// Run closes it when it returns.
	Listener net.Listener
	// DataDir holds the database file DBFile; it is created if missing.
	DataDir string
	// SeedRows is the number of rows in the sales table that the data report
	// aggregates. It is used only when the database is created: a later start
	// keeps whatever the file holds.
	SeedRows int
	// QueryTimeout bounds every database query.
	QueryTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight requests may take to finish.
	ShutdownTimeout time.Duration
	// MaxDBBytes caps the database file (SQLite's max_page_count, in pages
	// of pageSize); 0 is no cap but the disk's. Past it, or on a full
	// disk, a write answers store_full (503) and writes nothing, while
	// reads go on; writes succeed again once rows are deleted (SQLite
	// reuses their pages) or the cap is raised.
	MaxDBBytes int64
	// Queries, when set, is incremented once for every database query the
	// role runs (data report, item read, item update). It is not a flag: tests
	// in other packages use it to check, for example, that a cached read did
	// not reach the database.
	Queries *atomic.Int64
}

// DefaultConfig returns the settings used when no flag or environment
// variable says otherwise.
func DefaultConfig() Config {
	return Config{
		Addr:            ":5002",
		DataDir:         "./data",
		SeedRows:        300_000,
		QueryTimeout:    5 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// RegisterFlags defines the role's flags on s, with environment fallbacks and
// the values already in c as defaults. Parsing s fills c.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Addr, "addr", "SCALELAB_ADDR", c.Addr, "HTTP address to listen on")
	s.String(&c.DataDir, "data", "SCALELAB_DATA", c.DataDir, "directory holding the database file "+DBFile)
	s.Int(&c.SeedRows, "seed-rows", "SCALELAB_SEED_ROWS", c.SeedRows, "rows in the sales table when the database is first created")
	s.Duration(&c.QueryTimeout, "query-timeout", "SCALELAB_QUERY_TIMEOUT", c.QueryTimeout, "maximum duration of one database query")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "time allowed for in-flight requests at shutdown")
	s.Int64(&c.MaxDBBytes, "max-db-bytes", "SCALELAB_MAX_DB_BYTES", c.MaxDBBytes, "most bytes of the database file; past it item writes answer 503 store_full and reads go on (0: no cap but the disk's)")
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" && c.Listener == nil {
		errs = append(errs, errors.New("dbsvc: --addr must not be empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("dbsvc: --data must not be empty"))
	} else if strings.Contains(c.DataDir, "?") {
		// The SQLite driver reads everything after '?' as DSN parameters.
		errs = append(errs, errors.New("dbsvc: --data must not contain '?'"))
	}
	if c.SeedRows < 0 {
		errs = append(errs, errors.New("dbsvc: --seed-rows must be >= 0"))
	} else if c.SeedRows > MaxSeedRows {
		errs = append(errs, fmt.Errorf("dbsvc: --seed-rows must be <= %d", MaxSeedRows))
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, errors.New("dbsvc: --query-timeout must be > 0"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("dbsvc: --shutdown-timeout must be > 0"))
	}
	if c.MaxDBBytes < 0 {
		errs = append(errs, errors.New("dbsvc: --max-db-bytes must be >= 0"))
	}
	return errors.Join(errs...)
}

// dbPath returns the path of the database file.
func (c Config) dbPath() string { return filepath.Join(c.DataDir, DBFile) }
