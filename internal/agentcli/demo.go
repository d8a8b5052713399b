package agentcli

import (
	"io"

	"github.com/jetagent/jetagent/internal/demo"
	"github.com/spf13/cobra"
)

func newDemoCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Watch jetagent handle retries, a slow task, a circuit breaker, the DLQ and a crash, in 5-10 seconds once built",
		Long: `demo starts an embedded NATS server (in a temporary directory), an
orchestrator and five workers that break in different ways, and narrates what
happens: transient failures redelivered with backoff, a slow task kept alive by
heartbeats, a circuit breaker opening and closing, a task dead-lettered and
replayed after a fix, and a long task resuming from its checkpoint after its
worker died. It needs nothing installed and leaves nothing behind.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), stdout)
		},
	}
}
