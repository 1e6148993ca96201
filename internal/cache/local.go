package cache

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// localEntry is one L1 entry: a value (nil with notFound for a cached
// "not found") and the KV revision it came from.
type localEntry struct {
	value    []byte
	notFound bool
	revision uint64
	expires  time.Time
}

// local is the near-cache: a bounded LRU guarded by one mutex.
//
// A load that races an invalidation must not put the old value back after
// the invalidation removed it. Every invalidation bumps a counter for its
// key's stripe; a loader reads the counter before it loads and adds its
// value only if the counter has not moved. Check-and-add and bump-and-
// remove both hold the mutex, so one cannot fall between the two steps of
// the other.
type local struct {
	ttl  time.Duration
	now  func() time.Time
	seed maphash.Seed

	mu      sync.Mutex
	lru     *simplelru.LRU[string, localEntry]
	bytes   int64
	evicted uint64
	epochs  [256]uint64
}

func newLocal(size int, ttl time.Duration) *local {
	l := &local{ttl: ttl, now: time.Now, seed: maphash.MakeSeed()}
	l.lru, _ = simplelru.NewLRU(size, func(key string, e localEntry) {
		l.bytes -= int64(len(key) + len(e.value))
		l.evicted++
	})
	return l
}

func (l *local) stripe(key string) int {
	return int(maphash.String(l.seed, key) % uint64(len(l.epochs)))
}

// epoch returns the invalidation counter of key's stripe, to pass to add.
func (l *local) epoch(key string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epochs[l.stripe(key)]
}

// get returns the live entry of key.
func (l *local) get(key string) (localEntry, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.lru.Get(key)
	if !ok {
		return localEntry{}, false
	}
	if !l.now().Before(e.expires) {
		l.lru.Remove(key)
		l.evicted-- // an expiry, not an eviction
		return localEntry{}, false
	}
	return e, true
}

// add stores e under key unless key was invalidated since epoch was read.
func (l *local) add(key string, e localEntry, epoch uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.epochs[l.stripe(key)] != epoch {
		return false
	}
	e.expires = l.now().Add(l.ttl)
	if old, ok := l.lru.Peek(key); ok {
		l.bytes -= int64(len(key) + len(old.value))
	}
	l.lru.Add(key, e)
	l.bytes += int64(len(key) + len(e.value))
	return true
}

// invalidate removes key unless the entry is at least as new as revision
// (0 removes it whatever its revision), and stops loads in flight from
// adding an older value.
func (l *local) invalidate(key string, revision uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.lru.Peek(key); ok && revision != 0 && e.revision >= revision {
		return
	}
	l.epochs[l.stripe(key)]++
	if l.lru.Remove(key) {
		l.evicted--
	}
}

// purge empties the cache and stops every load in flight from adding.
func (l *local) purge() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.epochs {
		l.epochs[i]++
	}
	n := uint64(l.lru.Len())
	l.lru.Purge()
	l.evicted -= n
	l.bytes = 0
}

// localStats is a snapshot of L1's size.
type localStats struct {
	Entries   int    `json:"entries"`
	Bytes     int64  `json:"bytes"`
	Evictions uint64 `json:"evictions"`
}

func (l *local) stats() localStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return localStats{Entries: l.lru.Len(), Bytes: l.bytes, Evictions: l.evicted}
}
