package runtime

import (
	"context"

	"github.com/vmihailenco/msgpack/v5"
)

// Echo is a built-in handler that answers every task with its own payload,
// byte for byte. `agent run` serves it as the "echo" agent.
func Echo(_ context.Context, t *Task) (any, error) {
	if t.Envelope.Payload == nil {
		return nil, nil
	}
	return msgpack.RawMessage(t.Envelope.Payload), nil
}
