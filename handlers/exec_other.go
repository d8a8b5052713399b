//go:build !unix

package handlers

import (
	"os"
	"os/exec"
)

// ownProcessGroup keeps os/exec's default cancellation (kill the program
// only): process groups are a unix notion.
func ownProcessGroup(*exec.Cmd) {}

func killProcessGroup(int) {}

func signalOf(*os.ProcessState) (string, bool) { return "", false }
