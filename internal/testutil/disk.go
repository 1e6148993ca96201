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

// FillDisk writes the file ballast in dir's filesystem until the disk is
// full (ENOSPC), then gives back leave bytes of it, so that about leave
// bytes are free. Removing ballast returns the space.
func FillDisk(t testing.TB, dir string, leave int64) (ballast string) {
	t.Helper()
	ballast = filepath.Join(dir, "ballast")
	f, err := os.OpenFile(ballast, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4<<10)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("fill %s: %v", ballast, err)
		}
	}
	if err := f.Truncate(max(size-leave, 0)); err != nil {
		t.Fatalf("give back %d bytes of %s: %v", leave, ballast, err)
	}
	return ballast
}
