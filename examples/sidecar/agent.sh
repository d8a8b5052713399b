#!/bin/sh
# A jetagent agent in shell, run per task by `agent run` (the exec handler):
# the envelope JSON comes on stdin, the answer (one JSON value) goes to
# stdout; exit 75 asks for a retry, any other failure dead-letters the task.
# It answers with the size of the envelope it got.
envelope=$(cat) || exit 75
printf '{"agent": "%s", "attempt": %s, "envelope_length": %s}\n' \
	"$JETAGENT_AGENT" "$JETAGENT_ATTEMPT" "${#envelope}"
