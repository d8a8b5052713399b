// Command replay inspects, replays and purges jetagent's dead-letter
// queue. Run "replay --help" for usage; the logic lives in
// internal/replaycli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetagent/jetagent/internal/replaycli"
	"golang.org/x/term"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(replaycli.Main(ctx, os.Args[1:], replaycli.IO{
		In:            os.Stdin,
		Out:           os.Stdout,
		Err:           os.Stderr,
		InIsTerminal:  term.IsTerminal(int(os.Stdin.Fd())),
		ErrIsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}))
}
