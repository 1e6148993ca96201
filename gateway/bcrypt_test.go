package gateway

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/dbsvc"
)

// TestBcryptCompareFallback: where a thread's priority cannot be lowered,
// compares run as before, on the caller's goroutine, with their results,
// and the gateway says so once, not at every login.
func TestBcryptCompareFallback(t *testing.T) {
	t.Parallel()
	var logged bytes.Buffer
	b := newBcryptSlots(1, nil, slog.New(slog.NewJSONHandler(&logged, nil)))
	tries := 0
	b.lowerFn = func(int) error {
		tries++
		return errors.ErrUnsupported
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), dbsvc.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := b.compare(hash, []byte("right")); err != nil {
			t.Errorf("compare of the right password = %v, want nil", err)
		}
		if err := b.compare(hash, []byte("wrong")); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			t.Errorf("compare of a wrong password = %v, want ErrMismatchedHashAndPassword", err)
		}
	}
	if tries != 1 || b.lowPriority.Load() {
		t.Errorf("after a failure to lower the priority: %d tries, low priority %t; want 1 try, then false", tries, b.lowPriority.Load())
	}
	if n := strings.Count(logged.String(), "normal priority"); n != 1 {
		t.Errorf("logged %q, want the fallback once", logged.String())
	}
}

// BenchmarkBcryptCompare: a login's compare at the real cost, on the
// caller's goroutine as before and on a thread of its own at low
// priority. On an idle machine the two take the same time (a thread
// costs tens of microseconds to start, the compare some 250 ms): nice
// matters only when something else wants the CPU.
//
//	go test -run '^$' -bench BcryptCompare -benchtime 20x ./gateway/
func BenchmarkBcryptCompare(b *testing.B) {
	for _, low := range []bool{false, true} {
		name := "caller"
		if low {
			name = "nice"
		}
		b.Run(name, func(b *testing.B) {
			s := newBcryptSlots(1, nil, nil)
			s.lowPriority.Store(low)
			for b.Loop() {
				if err := s.compare([]byte(dummyHash), []byte("Winter2025!")); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
					b.Fatalf("compare against dummyHash = %v, want a mismatch", err)
				}
			}
		})
	}
}
