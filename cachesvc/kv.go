package cachesvc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the KV bucket of the shared cache.
const Bucket = "cache"

// ErrMiss is returned by Client.Get when the key is not cached.
var ErrMiss = errors.New("cachesvc: miss")

// ErrNoBucket is returned while the bucket does not exist yet (cachesvc has
// not started); callers treat it like any cache outage and read the source.
var ErrNoBucket = errors.New("cachesvc: bucket not provisioned")

// keyPattern is what NATS allows in a KV key, minus the wildcards: a key
// becomes part of a subject, so '*', '>' and spaces must never reach it.
var keyPattern = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]{1,256}$`)

// ValidKey reports whether key can be used as a cache key: KV key
// characters only, no empty subject token ("a..b", ".a", "a.").
func ValidKey(key string) bool {
	return keyPattern.MatchString(key) &&
		!strings.HasPrefix(key, ".") && !strings.HasSuffix(key, ".") && !strings.Contains(key, "..")
}

// provision creates or updates the bucket.
func provision(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "scalelab shared cache (cache-aside)",
		History:     1,
		TTL:         cfg.TTL,
		MaxBytes:    int64(cfg.MaxMB) << 20,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Client reads and writes the shared cache. It binds to the bucket on first
// use, so a gateway may start before cachesvc has provisioned it.
type Client struct {
	js jetstream.JetStream

	mu sync.Mutex
	kv jetstream.KeyValue
}

// NewClient returns a client over js.
func NewClient(js jetstream.JetStream) *Client { return &Client{js: js} }

func (c *Client) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil {
		return c.kv, nil
	}
	kv, err := c.js.KeyValue(ctx, Bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, ErrNoBucket
		}
		return nil, fmt.Errorf("bind bucket %s: %w", Bucket, err)
	}
	c.kv = kv
	return kv, nil
}

// Get returns the cached value of key, ErrMiss if there is none, or another
// error if the cache cannot be read.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, ErrMiss
		}
		return nil, fmt.Errorf("cache get %s: %w", key, err)
	}
	return e.Value(), nil
}

// Put stores value under key for the bucket's TTL.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	kv, err := c.bucket(ctx)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("cache put %s: %w", key, err)
	}
	return nil
}
