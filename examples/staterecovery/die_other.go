//go:build !linux

package main

import "syscall"

// dieWithParent: only Linux can tie a child's life to its parent's; the
// example kills its workers itself on every path it controls.
func dieWithParent() *syscall.SysProcAttr { return nil }
