package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestImpossibleFlagsAreRefused(t *testing.T) {
	for _, c := range []struct{ steps, killAfter int }{{3, 5}, {0, 0}, {5, -1}, {5, 0}} {
		done := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		go func() { done <- run(ctx, &bytes.Buffer{}, c.steps, c.killAfter) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "--kill-after") && !strings.Contains(err.Error(), "--steps") {
				t.Errorf("--steps %d --kill-after %d: err = %v, want the flags refused", c.steps, c.killAfter, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("--steps %d --kill-after %d: still running after 10s", c.steps, c.killAfter)
		}
		cancel()
	}
}

// processesMarked returns the pids of processes whose environment holds
// marker.
func processesMarked(t *testing.T, marker string) []int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil || len(dirs) == 0 {
		t.Skip("no /proc")
	}
	var pids []int
	for _, d := range dirs {
		env, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil || !bytes.Contains(env, []byte(marker)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join(d, "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue // a zombie waiting for its parent: gone already
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		pids = append(pids, pid)
	}
	return pids
}

// TestStoppingTheExampleLeavesNoWorkerBehind: SIGTERM to the example while
// its first worker runs; every process it started must be gone soon after.
func TestStoppingTheExampleLeavesNoWorkerBehind(t *testing.T) {
	marker := "JETAGENT_EXAMPLE_TEST_MARK=" + strconv.FormatInt(time.Now().UnixNano(), 36)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--steps", "10", "--kill-after", "3")
	cmd.Env = append(os.Environ(), parentEnvForTest+"=1", marker)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range processesMarked(t, marker) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "worker 1: step 1") {
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		t.Fatal("the example did not stop on SIGTERM")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesMarked(t, marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind after the example stopped: %v", left)
		}
		time.Sleep(50 * time.Millisecond) // polling /proc
	}
}
