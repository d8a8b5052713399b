// Command probe is a tiny program the harness tests build into an image and for the host,
// to check buildImage and buildHostBinary end to end. It prints one line and exits.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	// A FROM scratch image built by buildImage has a /tmp; prove it is writable.
	f, err := os.CreateTemp("", "probe-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe: temp file:", err)
		os.Exit(1)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	fmt.Printf("probe ok args=%s\n", strings.Join(os.Args[1:], ","))
}
