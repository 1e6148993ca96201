package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Reloader holds the certificate and key of two PEM files and loads them
// again on Reload, or by itself when Watch sees the files change. Its
// GetCertificate goes in a tls.Config; it is safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	now               func() time.Time // time.Now; tests move it

	cur atomic.Pointer[tls.Certificate] // Leaf set
	mu  sync.Mutex                      // one load at a time
	// tried is the state of the files at the last load, good or bad, so
	// that Watch loads a changed pair once rather than at every tick.
	tried stamp
}

// Load reads the certificate (with its chain) and key in certFile and
// keyFile, and returns a Reloader serving them, or why they do not serve.
func Load(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, now: time.Now}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On any error (a file missing or half
// written, a key that does not match the certificate, a certificate not
// valid now) it returns the reason and the pair loaded before stays.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tried = stampOf(r.certFile, r.keyFile)
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", r.certFile, r.keyFile, err)
	}
	now := r.now()
	if now.Before(cert.Leaf.NotBefore) || now.After(cert.Leaf.NotAfter) {
		return fmt.Errorf("tls certificate %s is valid from %s to %s, not now", r.certFile,
			cert.Leaf.NotBefore.UTC().Format(time.RFC3339), cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	r.cur.Store(&cert)
	return nil
}

// GetCertificate returns the pair loaded last, for tls.Config.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Leaf is the certificate served now, parsed: its names and expiry are for
// logs and status pages.
func (r *Reloader) Leaf() *x509.Certificate { return r.cur.Load().Leaf }

// Watch checks the files every interval until ctx ends, and reloads them
// when either has changed (size, time or inode) since the last load. A
// pair that does not load is logged once, and tried again at the next
// change: a certificate and key are often written one after the other,
// and the first look may find only one of them new.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		changed := stampOf(r.certFile, r.keyFile) != r.tried
		r.mu.Unlock()
		if !changed {
			continue
		}
		if err := r.Reload(); err != nil {
			log.Warn("tls certificate not reloaded; the old one stays", "err", err)
			continue
		}
		leaf := r.Leaf()
		log.Info("tls certificate reloaded", "subject", leaf.Subject.String(), "dns", leaf.DNSNames,
			"ips", leaf.IPAddresses, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// stamp is what Watch compares: size, modification time and inode of both
// files (a file replaced by a rename keeps neither).
type stamp struct{ cert, key fileStamp }

type fileStamp struct {
	size    int64
	modTime time.Time
	sys     string // inode and device where the system gives them
	missing bool
}

func stampOf(certFile, keyFile string) stamp {
	return stamp{statOf(certFile), statOf(keyFile)}
}

func statOf(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{missing: true}
	}
	return fileStamp{size: fi.Size(), modTime: fi.ModTime(), sys: inode(fi)}
}

// ServerConfig is the tls.Config of a server that serves r's pair: TLS
// 1.2 and 1.3 only, and for 1.2 only forward-secret AEAD suites (Mozilla's
// "intermediate" profile; 1.3's suites are not configurable and all
// good). nextProtos are the ALPN protocols offered, most preferred first
// ("h2", "http/1.1").
func ServerConfig(r *Reloader, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     nextProtos,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// ErrNoPair is returned by Check when only one of the two files is named.
var ErrNoPair = errors.New("--tls-cert and --tls-key go together: name both or neither")

// Check says whether a certificate and key setting is whole: both files
// named, or neither (no TLS).
func Check(certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return ErrNoPair
	}
	return nil
}
