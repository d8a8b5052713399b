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
//     settings, credentials among them), and with ExecConfig.EnvInherit
//     only the variables it lists (recommended: the agent's cloud
//     credentials or OTEL_EXPORTER_OTLP_HEADERS are none of the program's
//     business), plus ExecConfig.Env, plus JETAGENT_AGENT,
//     JETAGENT_ENVELOPE_ID, JETAGENT_ATTEMPT (delivery number, from 1),
//     JETAGENT_DEADLINE (RFC 3339, when the task is killed) and TRACEPARENT
//     (W3C trace context: the handler's span when the runtime traces, else
//     the task's). A value from the task that an environment cannot hold
//     (a NUL byte) fails the task permanently before anything runs;
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
//   - other statuses, by kind (DefaultStatusKind, each status overridable
//     with HTTPConfig.Statuses): transient for 401, 403 and 404 (an expired
//     token or a route not deployed yet is the service's problem: the
//     breaker holds tasks until it is fixed), 408, 425, 429 and 5xx;
//     permanent for the other 4xx, and 1xx or 3xx (redirects are not
//     followed). A transient status with Retry-After (seconds or an HTTP
//     date) is resilience.RetryAfter, redelivered after that delay (capped
//     by HTTPConfig.MaxRetryAfter);
//   - connection errors: transient (they wrap resilience.ErrConnection);
//   - a header value from the task that HTTP cannot carry (control
//     characters): permanent, and nothing is sent;
//   - the handler's deadline ends the request: timed out (transient); so
//     does HTTPConfig.ResponseHeaderTimeout, when set, if the response's
//     headers do not come in time.
//
// Error bodies and stderr lines are quoted (shortened) in the returned
// errors, so they reach the dead-letter record and the logs.
package handlers
