package cache

import (
	"testing"
	"time"
)

func TestLocalBounded(t *testing.T) {
	l := newLocal(2, time.Minute)
	e := func(v string) localEntry { return localEntry{value: []byte(v), revision: 1} }
	for _, k := range []string{"a", "b", "c"} {
		if !l.add(k, e(k+k), l.epoch(k)) {
			t.Fatalf("add(%s) = false on an unchanged epoch", k)
		}
	}
	if _, ok := l.get("a"); ok {
		t.Errorf("get(a) found the least recently used entry of a full cache, want it evicted")
	}
	for _, k := range []string{"b", "c"} {
		if got, ok := l.get(k); !ok || string(got.value) != k+k {
			t.Errorf("get(%s) = %q, %v, want %q, true", k, got.value, ok, k+k)
		}
	}
	st := l.stats()
	if st.Entries != 2 || st.Evictions != 1 || st.Bytes != int64(2*(1+2)) {
		t.Errorf("stats = %+v, want 2 entries, 1 eviction, 6 bytes", st)
	}
	l.invalidate("b", 0)
	l.purge()
	if st := l.stats(); st.Entries != 0 || st.Bytes != 0 || st.Evictions != 1 {
		t.Errorf("stats after purge = %+v, want empty with the 1 eviction kept", st)
	}
}

func TestLocalExpiry(t *testing.T) {
	l := newLocal(10, time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	l.add("k", localEntry{value: []byte("v")}, l.epoch("k"))
	if _, ok := l.get("k"); !ok {
		t.Fatalf("get(k) right after add missed")
	}
	now = now.Add(time.Second)
	if _, ok := l.get("k"); ok {
		t.Errorf("get(k) after its TTL hit, want a miss")
	}
	if st := l.stats(); st.Entries != 0 || st.Evictions != 0 {
		t.Errorf("stats after an expiry = %+v, want no entries and no evictions", st)
	}
}

// TestLocalLoadRacesInvalidation: a value loaded before an invalidation
// must not be added after it.
func TestLocalLoadRacesInvalidation(t *testing.T) {
	l := newLocal(10, time.Minute)
	epoch := l.epoch("k")
	l.invalidate("k", 0) // a write lands while the old value is loading
	if l.add("k", localEntry{value: []byte("old")}, epoch) {
		t.Errorf("add() after an invalidation of the key = true, want false")
	}
	epoch = l.epoch("k")
	l.purge()
	if l.add("k", localEntry{value: []byte("old")}, epoch) {
		t.Errorf("add() after a purge = true, want false")
	}
	if !l.add("k", localEntry{value: []byte("new")}, l.epoch("k")) {
		t.Errorf("add() with a fresh epoch = false, want true")
	}
}

// TestLocalKeepsNewerRevision: a watch event for the revision L1 already
// holds (its own fill) does not evict it; an older value is replaced.
func TestLocalKeepsNewerRevision(t *testing.T) {
	l := newLocal(10, time.Minute)
	l.add("k", localEntry{value: []byte("v5"), revision: 5}, l.epoch("k"))
	l.invalidate("k", 5)
	if _, ok := l.get("k"); !ok {
		t.Errorf("invalidate(k, 5) removed the entry of revision 5, want it kept")
	}
	l.invalidate("k", 6)
	if _, ok := l.get("k"); ok {
		t.Errorf("invalidate(k, 6) kept the entry of revision 5, want it removed")
	}
}
