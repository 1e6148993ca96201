package balancer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/certs"
	"github.com/scalelab/scalelab/internal/strictjson"
)

// Reload without restart: with --config FILE, the balancer reads the
// settings below from a JSON file at start, and again on SIGHUP (the
// balancer command passes it Config.Reload) or on POST /-/reload on the
// admin listener (a token with scope admin). A file that does not read,
// or settings that do not validate, are refused with the reason, and the
// settings in force stay; connections and requests in flight are not
// touched either way (a removed gateway finishes what it has). Settings
// the file leaves out keep their value from flags and environment.
//
//	{"backends": ["http://gw1:5000", "http://gw2:5000"], "weights": [3, 1],
//	 "policy": "weighted_round_robin", "max_inflight": 4096,
//	 "max_conns": 10000, "max_conns_per_ip": 2048, "max_retries": 2}

// FileConfig is what a configuration file may set.
type FileConfig struct {
	Backends      []string `json:"backends,omitempty"`
	Weights       []int    `json:"weights,omitempty"`
	Policy        string   `json:"policy,omitempty"`
	MaxInFlight   *int     `json:"max_inflight,omitempty"`
	MaxConns      *int     `json:"max_conns,omitempty"`
	MaxConnsPerIP *int     `json:"max_conns_per_ip,omitempty"`
	MaxRetries    *int     `json:"max_retries,omitempty"`
}

// maxConfigFile bounds the file: a few lines, not a stream.
const maxConfigFile = 1 << 20

// readConfigFile reads the file of cfg, strictly (unknown fields and
// duplicate keys refused), and returns cfg with its settings applied.
func readConfigFile(cfg Config) (Config, error) {
	data, err := os.ReadFile(cfg.ConfigFile)
	if err != nil {
		return cfg, fmt.Errorf("balancer: --config: %w", err)
	}
	if len(data) > maxConfigFile {
		return cfg, fmt.Errorf("balancer: --config: %s is over %d bytes", cfg.ConfigFile, maxConfigFile)
	}
	var f FileConfig
	if err := strictjson.Decode(bytes.NewReader(data), &f); err != nil {
		return cfg, fmt.Errorf("balancer: --config %s: %w", cfg.ConfigFile, err)
	}
	if len(f.Backends) > 0 {
		if cfg.Discover != "" {
			return cfg, fmt.Errorf("balancer: --config %s: backends and --discover are exclusive", cfg.ConfigFile)
		}
		cfg.Backends, cfg.Weights = f.Backends, nil
	}
	if len(f.Weights) > 0 {
		cfg.Weights = f.Weights
	}
	if f.Policy != "" {
		cfg.Policy = f.Policy
	}
	for _, s := range []struct {
		v   *int
		dst *int
	}{{f.MaxInFlight, &cfg.MaxInFlight}, {f.MaxConns, &cfg.MaxConns}, {f.MaxConnsPerIP, &cfg.MaxConnsPerIP}, {f.MaxRetries, &cfg.MaxRetries}} {
		if s.v != nil {
			*s.dst = *s.v
		}
	}
	return cfg, cfg.Validate()
}

// reloader holds what a reload starts from: the configuration of flags
// and environment, to which the file is applied anew each time.
type reloader struct {
	mu   sync.Mutex
	base Config // before the file
	cur  Config // in force
	// checks bounds the health checks of gateways a reload adds, as Run's
	// own (they outlive the shutdown's start until the drain is done).
	checks context.Context
	// cert is the HTTPS certificate, read again by a reload too; nil
	// without HTTPS.
	cert *certs.Reloader
}

// errNoConfigFile answers a reload without --config.
var errNoConfigFile = errors.New("balancer: nothing to reload: the balancer was started without --config or --tls-cert")

// reload reads the configuration file again and puts its settings in
// force, or returns why not (the old ones stay).
func (b *balancer) reload() (Config, error) {
	r := &b.reloader
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base.ConfigFile == "" && r.cert == nil {
		return r.cur, errNoConfigFile
	}
	if r.cert != nil {
		// The certificate too, as nginx reloads its own on SIGHUP.
		if err := r.cert.Reload(); err != nil {
			return r.cur, err
		}
	}
	if r.base.ConfigFile == "" {
		return r.cur, nil
	}
	next, err := readConfigFile(r.base)
	if err != nil {
		return r.cur, err
	}
	policy := b.pool.ready.Load().policy
	if next.Policy != r.cur.Policy {
		if policy, err = newPicker(next.Policy); err != nil {
			return r.cur, err
		}
	}
	if next.Discover == "" {
		urls, err := parseBackends(next.Backends)
		if err != nil {
			return r.cur, err
		}
		targets := make([]target, len(urls))
		for i, u := range urls {
			targets[i] = target{url: u, weight: 1}
			if len(next.Weights) > 0 {
				targets[i].weight = next.Weights[i]
			}
		}
		b.pool.setPolicy(policy)
		b.pool.set(r.checks, targets, false)
	} else {
		b.pool.setPolicy(policy)
	}
	b.maxInFlight.Store(int64(next.MaxInFlight))
	b.forwarder.maxRetries.Store(int32(next.MaxRetries))
	b.limits.setCaps(next.MaxConns, next.MaxConnsPerIP)
	r.cur = next
	b.log.Info("configuration reloaded", "file", next.ConfigFile, "policy", next.Policy, "backends", next.Backends,
		"weights", next.Weights, "max_inflight", next.MaxInFlight, "max_conns", next.MaxConns,
		"max_conns_per_ip", next.MaxConnsPerIP, "max_retries", next.MaxRetries)
	return next, nil
}

// handleReload is POST /-/reload: 200 with the settings now in force, or
// 400 with why the file was refused (and the old settings stay).
func (b *balancer) handleReload(w http.ResponseWriter, _ *http.Request) {
	cfg, err := b.reload()
	if err != nil {
		b.log.Warn("configuration not reloaded; the old one stays", "err", err)
		apperr.WriteCode(w, http.StatusBadRequest, apperr.Invalid, err.Error(), "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"reloaded": cfg.ConfigFile, "policy": cfg.Policy, "backends": cfg.Backends, "weights": cfg.Weights,
		"max_inflight": cfg.MaxInFlight, "max_conns": cfg.MaxConns, "max_conns_per_ip": cfg.MaxConnsPerIP,
		"max_retries": cfg.MaxRetries,
	})
}
