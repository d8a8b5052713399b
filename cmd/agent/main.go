// Command agent runs jetagent agents and sends them tasks.
// Run "agent --help" for usage; the logic lives in internal/agentcli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetagent/jetagent/internal/agentcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling so that a
		// second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
