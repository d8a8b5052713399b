package testio

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ShutdownListener shuts down, from the calling process, the TCP socket
// that process pid listens on at 127.0.0.1:port: it finds the socket's
// inode in /proc/<pid>/net/tcp and the descriptor that holds it under
// /proc/<pid>/fd, takes a copy of that descriptor with pidfd_getfd(2)
// (the caller needs the right to ptrace pid: root, or its parent with
// ptrace_scope 0), and shuts the socket down. The owner's accept then
// fails for good, as when its listener breaks. pid may be the caller's.
func ShutdownListener(pid, port int) error {
	inode, err := listeningInode(pid, port)
	if err != nil {
		return err
	}
	fd, err := fdOf(pid, inode)
	if err != nil {
		return err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd %d of %d: %w", fd, pid, err)
	}
	defer unix.Close(local)
	if err := unix.Shutdown(local, unix.SHUT_RDWR); err != nil {
		return fmt.Errorf("shutdown socket %s of %d: %w", inode, pid, err)
	}
	return nil
}

// listeningInode returns the inode of the TCP socket listening on
// 127.0.0.1:port in pid's network namespace.
func listeningInode(pid, port int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port) // 127.0.0.1 as the kernel prints it, and the port
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) >= 10 && fields[1] == want && fields[3] == "0A" { // 0A: LISTEN
			return fields[9], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no socket of process %d listens on 127.0.0.1:%d", pid, port)
}

// fdOf returns pid's descriptor of the socket with inode.
func fdOf(pid int, inode string) (int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if errors.Is(err, syscall.ENOENT) {
			continue // closed meanwhile
		}
		if err != nil {
			return 0, err
		}
		if target == "socket:["+inode+"]" {
			return strconv.Atoi(e.Name())
		}
	}
	return 0, fmt.Errorf("process %d holds no descriptor of socket %s", pid, inode)
}
