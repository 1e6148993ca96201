package natsconf

import (
	_ "embed"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scalelab/scalelab/internal/logging"
)

// SingleConf is the text of single.conf.
//
//go:embed single.conf
var SingleConf string

// Embedded configures the in-process server of `scalelab up`.
type Embedded struct {
	// Host and Port are the client listener; Port -1 picks a free port.
	Host string
	Port int
	// HTTPPort is the monitoring port (/varz, /jsz); 0 disables it and -1
	// picks a free port.
	HTTPPort int
	// StoreDir is the JetStream file store. Keeping it across runs keeps
	// queued tasks and buckets.
	StoreDir string
	// MaxStore is the server's JetStream file store limit in bytes (its
	// max_file_store). 0 leaves the server's default: 75 % of the disk's
	// free space at start. `up` sets GuardMaxStore and runs GuardStore,
	// whose limit follows the disk.
	MaxStore int64
	// Passwords, when not nil, turn on authorization: one user per role
	// with the permissions of Table (see Users). A role without a
	// password cannot log in. Nil means no authentication, for tests
	// that are not about permissions.
	Passwords map[Role]string
}

// The go:generate line below rewrites authorization.conf from Table; a
// test fails while the file is stale.
//go:generate go test -run ^TestAuthorizationConfUpToDate$ -update .

// StartEmbedded starts a JetStream-enabled server and waits until it
// accepts connections. The caller stops it with Shutdown and
// WaitForShutdown after draining its own connections.
func StartEmbedded(cfg Embedded, log *slog.Logger) (*server.Server, error) {
	dir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("embedded nats store dir %s: %w", cfg.StoreDir, err)
	}
	opts := &server.Options{
		ServerName: "scalelab-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		HTTPHost:   cfg.Host,
		HTTPPort:   cfg.HTTPPort,
		JetStream:  true,
		StoreDir:   dir,
		MaxPayload: 1 << 20,
		// 0 is the server's default.
		JetStreamMaxStore: cfg.MaxStore,
		// Only main handles signals: Ctrl-C must drain the roles before
		// the server goes away.
		NoSigs: true,
	}
	if cfg.Passwords != nil {
		// A permission violation is logged by the server (at error level,
		// through slogAdapter) and sent to the client, whose natsconn
		// error handler logs it too.
		opts.Users = Users(cfg.Passwords)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	ns.SetLoggerV2(logging.Printf{Log: log.With("role", "nats")}, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d did not start in 30s (port in use?)", cfg.Host, cfg.Port)
	}
	log.Info("embedded nats ready", "url", ns.ClientURL(), "store_dir", dir, "monitor_port", cfg.HTTPPort,
		"users", len(opts.Users))
	return ns, nil
}
