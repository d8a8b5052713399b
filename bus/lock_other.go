//go:build !unix

package bus

// lockDir is a no-op where advisory file locks are not available: do not
// point two embedded servers at one data directory there.
func lockDir(string) (*dirLock, error) { return &dirLock{unlock: func() {}}, nil }
