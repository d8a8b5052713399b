package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// benchMain, set in the environment, makes this test binary cmd/bench,
// so that a test sees what the process leaves behind when it exits.
const benchMain = "JETAGENT_BENCH_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(benchMain) == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

// A run that fails after the CPU profile started still writes the whole
// profile: an os.Exit on the error path used to skip its flush and leave
// the file empty. The run fails at once because its temporary directory
// cannot be made.
func TestCPUProfileIsWrittenWhenTheRunFails(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	prof := filepath.Join(dir, "cpu.out")
	cmd := exec.Command(self, "-cpuprofile", prof, "-load", "0", "-out", "")
	cmd.Env = append(os.Environ(), benchMain+"=1", "TMPDIR="+filepath.Join(dir, "missing"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.HasPrefix(stderr.String(), "bench: ") || !strings.Contains(stderr.String(), "missing") {
		t.Fatalf("bench: %v, stderr %q, stdout %q; want exit 1 naming the missing directory", err, stderr.String(), stdout.String())
	}
	checkProfile(t, prof)
}

// checkProfile fails unless path holds a complete pprof profile: a gzip
// stream with its trailer, holding a protobuf message that parses to its
// end and has the fields every profile has (sample_type, string_table).
func checkProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() == 0 {
		t.Fatalf("CPU profile %s is empty (%v): it was never flushed", path, err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("CPU profile %s is not gzip: %v", path, err)
	}
	data, err := io.ReadAll(zr) // an unfinished stream ends in io.ErrUnexpectedEOF
	if err != nil {
		t.Fatalf("CPU profile %s is cut short: %v", path, err)
	}
	fields, err := protoFields(data)
	if err != nil {
		t.Fatalf("CPU profile %s does not parse: %v", path, err)
	}
	const sampleType, stringTable = 1, 6 // profile.proto's field numbers
	if !fields[sampleType] || !fields[stringTable] {
		t.Fatalf("CPU profile %s lacks sample_type or string_table: fields %v", path, fields)
	}
}

// protoFields walks the top-level fields of a protobuf message and
// returns the field numbers it holds.
func protoFields(b []byte) (map[uint64]bool, error) {
	fields := map[uint64]bool{}
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errors.New("bad tag")
		}
		b = b[n:]
		var size uint64
		switch tag & 7 {
		case 0: // varint
			if _, n = binary.Uvarint(b); n <= 0 {
				return nil, errors.New("bad varint")
			}
			size = uint64(n)
		case 1: // 64-bit
			size = 8
		case 2: // length-delimited
			l, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errors.New("bad length")
			}
			b, size = b[n:], l
		case 5: // 32-bit
			size = 4
		default:
			return nil, fmt.Errorf("wire type %d", tag&7)
		}
		if size > uint64(len(b)) {
			return nil, fmt.Errorf("field %d runs past the end", tag>>3)
		}
		fields[tag>>3] = true
		b = b[size:]
	}
	return fields, nil
}

// Wrong flags exit 2 before anything is measured; --help exits 0.
func TestRunRefusesWrongFlags(t *testing.T) {
	cases := []struct {
		args   []string
		code   int
		stderr string // its first line
	}{
		{[]string{"-h"}, 0, "bench measures jetagent against hand-written nats.go code (and the"},
		{[]string{"-nope"}, 2, "flag provided but not defined: -nope"},
		{[]string{"-rounds", "0"}, 2, "bench: takes no arguments; --rounds, --messages and --requests must be positive, --load not negative"},
		{[]string{"extra"}, 2, "bench: takes no arguments; --rounds, --messages and --requests must be positive, --load not negative"},
		{[]string{"-only", "zzz"}, 2, `bench: --only "zzz" matches no measurement; they are:`},
		{[]string{"-out", filepath.Join(t.TempDir(), "missing", "b.md")}, 2, "bench: cannot write "},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), c.args, &stdout, &stderr)
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != c.code || !strings.HasPrefix(first, c.stderr) || stdout.Len() != 0 {
			t.Errorf("bench %v: exit %d, stderr %q, stdout %q; want exit %d, stderr from %q", c.args, code, first, stdout.String(), c.code, c.stderr)
		}
	}
}
