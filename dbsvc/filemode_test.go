package dbsvc

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestDatabaseFilesArePrivate (issue #24): the SQLite file holds the
// users' password hashes. Another local user can read neither it nor its
// WAL and shared-memory files, whatever the umask, and a file left
// readable by an older run is made private.
func TestDatabaseFilesArePrivate(t *testing.T) {
	// A permissive umask, as a shared machine may have: the modes must
	// not depend on it. Not parallel: the umask is the process's.
	old := syscall.Umask(0o002)
	t.Cleanup(func() { syscall.Umask(old) })

	dir := filepath.Join(t.TempDir(), "data")
	st := openStoreRows(t, dir, 10, testLogger(t))
	if _, err := st.PutUser(t.Context(), UserPut{Name: "alice", PasswordHash: testHash(t, "a good password"), Scopes: []string{"data:read"}}); err != nil {
		t.Fatalf("PutUser = %v", err)
	}
	path := filepath.Join(dir, DBFile)
	checkMode(t, dir, 0o700)
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		checkMode(t, f, 0o600)
	}

	// A database an older run left world-readable.
	if err := st.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(f, 0o644); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	st = openStoreRows(t, dir, 10, testLogger(t))
	if _, err := st.User(t.Context(), "alice"); err != nil {
		t.Fatalf("User after reopening = %v, want the user kept", err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		checkMode(t, f, 0o600)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o, want %#o", filepath.Base(path), got, want)
	}
}
