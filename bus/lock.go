package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// lockFile is the name of the lock file in a data directory.
const lockFile = "jetagent.lock"

// DataDirOwner is what the embedded server serving a data directory
// records about itself in the directory's lock file, for the tools that
// find the directory in use (agent run, replay --data-dir).
type DataDirOwner struct {
	// PID is the owner's process id.
	PID int `json:"pid"`
	// URL is where clients reach its server; "" when it listens nowhere
	// (EmbeddedOptions.DontListen: only in-process connections).
	URL string `json:"url,omitempty"`
	// Started is when the server became ready.
	Started time.Time `json:"started"`
}

// DataDirLockedError is the error of [StartEmbedded] when another process
// serves the data directory. It wraps [ErrDataDirLocked].
type DataDirLockedError struct {
	// Dir is the data directory.
	Dir string
	// Owner is what the owner recorded; zero when it has not recorded
	// anything yet (it is starting) or runs an older version.
	Owner DataDirOwner
}

func (e *DataDirLockedError) Error() string {
	switch {
	case e.Owner.PID == 0:
		return fmt.Sprintf("%v: %s (its owner is starting, or recorded nothing)", ErrDataDirLocked, e.Dir)
	case e.Owner.URL == "":
		return fmt.Sprintf("%v: %s (pid %d, which accepts no network clients)", ErrDataDirLocked, e.Dir, e.Owner.PID)
	default:
		return fmt.Sprintf("%v: %s (pid %d, clients on %s)", ErrDataDirLocked, e.Dir, e.Owner.PID, e.Owner.URL)
	}
}

func (e *DataDirLockedError) Unwrap() error { return ErrDataDirLocked }

// dirLock is a held data directory lock.
type dirLock struct {
	f      *os.File // nil where locks are not supported
	unlock func()
}

// record writes the owner into the lock file, replacing what was there.
func (l *dirLock) record(o DataDirOwner) error {
	if l.f == nil {
		return nil
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("bus: record data dir owner: %w", err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("bus: record data dir owner: %w", err)
	}
	return nil
}

// readOwner reads the owner recorded in the lock file at path.
func readOwner(path string) (DataDirOwner, error) {
	var o DataDirOwner
	b, err := os.ReadFile(path)
	if err != nil {
		return o, err
	}
	if len(b) == 0 {
		return o, errors.New("bus: no owner recorded")
	}
	err = json.Unmarshal(b, &o)
	return o, err
}
