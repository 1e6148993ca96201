package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/testutil"
)

// threadNice is the nice value of the calling OS thread. The raw
// getpriority system call answers 20 - nice.
func threadNice(t *testing.T) int {
	t.Helper()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatalf("getpriority: %v", err)
	}
	return 20 - p
}

// nicedThreads counts the threads of this process at nice n, from
// /proc/self/task/*/stat (field 19), but for the main thread: a goroutine
// that ends locked to it leaves it parked for good, not ended.
func nicedThreads(n int) (int, error) {
	mainStat := fmt.Sprintf("/proc/self/task/%d/stat", os.Getpid())
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		return 0, fmt.Errorf("list threads: %w", err)
	}
	count := 0
	for _, p := range stats {
		if p == mainStat {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended meanwhile
		}
		// The command name, in parentheses, may hold spaces: count from
		// its end.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) < 17 {
			return 0, fmt.Errorf("%s: %d fields after the name, want at least 17", p, len(fields))
		}
		if v, err := strconv.Atoi(fields[16]); err == nil && v == n {
			count++
		}
	}
	return count, nil
}

// TestBcryptCompareLowPriority: on Linux a compare runs on a thread at
// nice 19, with its result, and leaves the caller's thread as it was;
// once compares end, their threads end with them, so no other goroutine
// ever runs at that priority (but the main thread, which the runtime
// parks for good rather than ending, may stay niced).
func TestBcryptCompareLowPriority(t *testing.T) {
	// Not parallel: it counts the process's niced threads.
	runtime.LockOSThread()
	before := threadNice(t)
	runtime.UnlockOSThread()
	if before >= bcryptNice {
		t.Skipf("the test already runs at nice %d", before)
	}
	b := newBcryptSlots(2, nil, testutil.QuietLog())
	var niceIn []int
	b.compareFn = func(hash, password []byte) error {
		niceIn = append(niceIn, threadNice(t)) // one compare at a time
		return bcrypt.CompareHashAndPassword(hash, password)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), dbsvc.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		runtime.LockOSThread()
		if err := b.compare(hash, []byte("right")); err != nil {
			t.Errorf("compare of the right password = %v, want nil", err)
		}
		if err := b.compare(hash, []byte("wrong")); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			t.Errorf("compare of a wrong password = %v, want ErrMismatchedHashAndPassword", err)
		}
		if got := threadNice(t); got != before {
			t.Errorf("the caller's thread is at nice %d after a compare, want %d", got, before)
		}
		runtime.UnlockOSThread()
	}
	for i, n := range niceIn {
		if n != bcryptNice {
			t.Errorf("compare %d ran at nice %d, want %d", i+1, n, bcryptNice)
		}
	}
	if !b.lowPriority.Load() {
		t.Errorf("low priority turned off on Linux, want it on")
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		n, err := nicedThreads(bcryptNice)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d threads at nice %d after 10 compares ended, want none", n, bcryptNice)
		}
		return nil
	})
}
