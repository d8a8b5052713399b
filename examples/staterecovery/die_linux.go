package main

import "syscall"

// dieWithParent makes the kernel kill a worker when the example dies
// before it could (SIGKILL, a crash): no worker outlives it.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
