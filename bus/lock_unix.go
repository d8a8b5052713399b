//go:build unix

package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive advisory lock on dir/jetagent.lock so that two
// embedded servers never share one JetStream store. While it holds the
// lock, the owner records in the file who it is and where clients reach it
// (see [DataDirOwner]); a process refused the lock reads that record.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bus: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner, _ := readOwner(path) // a record not written yet reads as zero
			return nil, &DataDirLockedError{Dir: dir, Owner: owner}
		}
		return nil, fmt.Errorf("bus: lock data dir %s: %w", dir, err)
	}
	return &dirLock{f: f, unlock: func() {
		_ = f.Truncate(0) // nobody owns it now
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}}, nil
}
