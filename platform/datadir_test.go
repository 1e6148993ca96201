package platform

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDataDirIsPrivate (issue #24): up's data directory and its nats
// store are created 0700 whatever the umask; a nats store an older run
// left 0755 is tightened; a data directory the user made wider is warned
// about, not changed.
func TestDataDirIsPrivate(t *testing.T) {
	// Not parallel: the umask is the process's.
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	dir := filepath.Join(t.TempDir(), "data")
	if err := makeDataDir(dir, log); err != nil {
		t.Fatalf("makeDataDir = %v", err)
	}
	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, "nats"), 0o700)
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("warned about a new data dir:\n%s", logs.String())
	}

	// As an older run left it.
	for _, d := range []string{dir, filepath.Join(dir, "nats")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := makeDataDir(dir, log); err != nil {
		t.Fatalf("makeDataDir on an old dir = %v", err)
	}
	checkMode(t, filepath.Join(dir, "nats"), 0o700)
	checkMode(t, dir, 0o755)
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "chmod 700") {
		t.Errorf("no warning about a data dir other users can read; log:\n%s", logs.String())
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o, want %#o", path, got, want)
	}
}
