// Package handlers offers runtime handlers that hand each task to a program
// written in any language, so that it gets jetagent's resilience (backoff,
// breakers, dead letters, heartbeats) without a client library: `agent run`
// serves them as the exec and http handler kinds (the sidecar pattern).
//
// Both kinds speak the same JSON: the task goes out as its envelope in JSON
// (envelope.Envelope.MarshalJSON: wire keys, the payload as a JSON value),
// and the answer that comes back is one JSON value, which becomes the payload
// of the task.response reply; an empty answer is a reply without payload.
//
// [Exec] runs a program per task:
//
//   - stdin: the envelope JSON and a newline, then end of file;
//   - stdout: the answer (one JSON value; empty or blank: no payload), at
//     most ExecConfig.MaxOutput bytes;
//   - exit 0: success; exit 75 (EX_TEMPFAIL): transient, redelivered after
//     the backoff delay; any other exit status, or death by a signal:
//     permanent, dead-lettered at once. Stdout that is not one JSON value
//     (or too long) is permanent too, even after exit 0;
//   - stderr: logged line by line with the agent, envelope id and attempt,
//     up to ExecConfig.MaxStderr bytes per task (the rest is counted, not
//     kept); its last line is quoted in the error of a failed task;
//   - environment: the agent's own, less JETAGENT_* variables (the agent's
//     settings, credentials among them), plus ExecConfig.Env, plus
//     JETAGENT_AGENT, JETAGENT_ENVELOPE_ID, JETAGENT_ATTEMPT (delivery
//     number, from 1), JETAGENT_DEADLINE (RFC 3339, when the task is
//     killed) and TRACEPARENT (W3C trace context: the handler's span when
//     the runtime traces, else the task's);
//   - deadline: the program runs in a process group of its own; when the
//     handler's deadline passes, the whole group is killed (SIGKILL), so its
//     children die too, and the task counts as timed out (transient). When
//     the program exits, whatever it left running in its group is killed;
//   - a program that cannot be started (not found, not executable) is a
//     transient failure: the subject's breaker opens and tasks wait instead
//     of being dead-lettered while the machine is fixed.
//
// [HTTP] POSTs the envelope JSON to a URL (a local service):
//
//   - request headers: Content-Type and Accept application/json,
//     Jetagent-Agent, Jetagent-Envelope-Id, Jetagent-Attempt,
//     Jetagent-Payload-Type, Jetagent-Task-Id and Jetagent-Trace-Id (when
//     set), Jetagent-Deadline (RFC 3339), Idempotency-Key (the envelope's
//     idempotency key, else its id: the same on every redelivery), and
//     traceparent (as TRACEPARENT for exec);
//   - 2xx: success; the body is the answer (one JSON value; empty: no
//     payload), at most HTTPConfig.MaxResponse bytes, else permanent;
//   - 429 or 503 with Retry-After (seconds or an HTTP date):
//     resilience.RetryAfter, redelivered after that delay (capped by
//     HTTPConfig.MaxRetryAfter); without Retry-After, transient;
//   - 408, other 5xx, connection errors: transient (connection errors wrap
//     resilience.ErrConnection);
//   - other 4xx, and 1xx or 3xx (redirects are not followed): permanent;
//   - the handler's deadline ends the request: timed out (transient).
//
// Error bodies and stderr lines are quoted (shortened) in the returned
// errors, so they reach the dead-letter record and the logs.
package handlers
