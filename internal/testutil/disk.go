package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes on a new directory under
// t.TempDir() and unmounts it at cleanup: a real small disk, to fill for
// real. It skips the test, saying why, unless it runs as root on a
// system where `mount -t tmpfs` works (Linux).
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (a small disk to fill): run as root to include this test")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), "mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): skipping the real full-disk test", err, out)
	}
	// Registered after t.TempDir's own cleanup, so it runs first: the
	// directory is removed once it is unmounted.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// FillDisk writes the file ballast in dir's filesystem until about leave
// bytes are free: with leave 0, until the disk is full (ENOSPC); else up to
// the free space less leave, so that a writer running meanwhile does not
// meet ENOSPC (unless it writes more than leave while the file grows).
// Removing ballast returns the space.
func FillDisk(t testing.TB, dir string, leave int64) (ballast string) {
	t.Helper()
	want := int64(-1) // until ENOSPC
	if leave > 0 {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(dir, &fs); err != nil {
			t.Fatalf("statfs %s: %v", dir, err)
		}
		want = max(int64(fs.Bavail)*int64(fs.Bsize)-leave, 0)
	}
	ballast = filepath.Join(dir, "ballast")
	f, err := os.OpenFile(ballast, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4<<10)
	for size := int64(0); want < 0 || size < want; {
		n := int64(len(chunk))
		if want >= 0 {
			n = min(n, want-size)
		}
		w, err := f.Write(chunk[:n])
		size += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			// Full (with leave > 0, something else wrote meanwhile):
			// give leave back.
			if err := f.Truncate(max(size-leave, 0)); err != nil {
				t.Fatalf("give back %d bytes of %s: %v", leave, ballast, err)
			}
			break
		}
		if err != nil {
			t.Fatalf("fill %s: %v", ballast, err)
		}
	}
	return ballast
}
