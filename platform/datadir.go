package platform

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// privateDirMode is the mode of the directories `up` keeps its state in:
// the JetStream store (every task and cached value), the SQLite file (the
// users' password hashes) and the nats context (admin's password) are for
// the user who runs it alone.
const privateDirMode = 0o700

// makeDataDir creates the data directory and its nats subdirectory with
// privateDirMode. The nats subdirectory is scalelab's own, so a wider
// mode left by an older run is tightened. The data directory itself may
// be one the user chose (--data), perhaps their home: a wider mode there
// is only warned about, since the files scalelab writes into it are
// private in any case (dbsvc's database 0600, the context 0600, the store
// 0700).
func makeDataDir(dir string, log *slog.Logger) error {
	if err := mkdirPrivate(dir); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("up: data dir %s: %w", dir, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the data directory can be read by other users; its files are private, but consider chmod 700",
			"dir", dir, "mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
	}
	nats := filepath.Join(dir, "nats")
	if err := mkdirPrivate(nats); err != nil {
		return err
	}
	if err := os.Chmod(nats, privateDirMode); err != nil {
		return fmt.Errorf("up: data dir %s: %w", nats, err)
	}
	return nil
}

// mkdirPrivate creates dir and any missing parent with privateDirMode,
// whatever the umask (MkdirAll's mode is masked by it; 0700 loses nothing
// to a usual umask, but a Chmod makes sure of a new directory).
func mkdirPrivate(dir string) error {
	_, err := os.Stat(dir)
	existed := err == nil
	if err := os.MkdirAll(dir, privateDirMode); err != nil {
		return fmt.Errorf("up: create data dir %s: %w", dir, err)
	}
	if !existed {
		if err := os.Chmod(dir, privateDirMode); err != nil {
			return fmt.Errorf("up: data dir %s: %w", dir, err)
		}
	}
	return nil
}
