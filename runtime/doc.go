// Package runtime runs jetagent agents and sends them work.
//
// A [Runtime] consumes one agent's tasks from the tasks stream and, for each
// delivery, in this order:
//
//  1. parses and validates the envelope (bad input is dead-lettered with its
//     reason and settled, never retried, never lost);
//  2. finds the [Handler] registered for the payload type (none: dead-letter);
//  3. calls it with a deadline, recovering panics;
//  4. turns the outcome into exactly one disposition: success publishes the
//     reply to reply_to (its id derived from the request's, so the reply of a
//     redelivered duplicate is dropped by the server) and then acks; a failure
//     is redelivered after a backoff delay, and dead-lettered once the
//     attempts are used up. What happens is decided by one pure function,
//     [disposition.Decide] (package runtime/disposition, whose doc has the
//     whole table); the runtime carries the decision out.
//
// Deliveries flow from one pull subscription into a queue served by a small
// worker pool: no goroutine per message. The server bounds what an agent
// holds (MaxAckPending), and every delivery held, whether queued, running
// or waiting for its subject's breaker, gets InProgress heartbeats, so a
// backlog behind slow handlers is never redelivered to another replica.
//
// A [Client] sends envelopes to agents and waits for the correlated reply.
package runtime
