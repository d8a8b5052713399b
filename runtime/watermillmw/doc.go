// Package watermillmw offers jetagent's dispositions to watermill users, as
// Router middleware: the same outcomes the native runtime gives its
// handlers, for handlers written against watermill's message.Router.
//
// For each message, [Middleware.Middleware] decides exactly one
// disposition from the handler's error, classified by resilience.Classify:
//
//   - success: the Router acks (and publishes what the handler returned);
//   - transient, timeout, or a recovered panic: the subject's breaker
//     records a failure and the message is redelivered after
//     Backoff.Delay(n), n being its delivery count;
//   - resilience.RetryAfter(d): redelivered after d;
//   - permanent or malformed, or the last of MaxAttempts deliveries
//     failed: the message is copied to the dead-letter stream with its
//     provenance (reason, error, agent, subject, stream sequence,
//     deliveries, failure times; dlq.Parse reads it back), the copy is
//     waited for, and only then is the original acked. If the copy cannot
//     be stored, the original is redelivered after the backoff delay:
//     never dropped.
//
// While a subject's breaker is open, its messages wait in the middleware
// (the handler is not called, nothing is nacked) until the breaker lets a
// probe through: an open breaker never uses up deliveries and never
// dead-letters a message, however long it stays open.
//
// # Wiring
//
// The middleware works with any watermill subscriber, and does its best
// with watermillbus.Subscriber (package bus/watermillbus), which tells it
// the delivery count, the subject and the stream position
// (watermillbus.MetadataNumDelivered and its siblings), honours the
// per-message redelivery delay it sets (watermillbus.MetadataNakDelay) and
// sends InProgress heartbeats while a message is in hand, so a slow handler
// or a message held by an open breaker is not redelivered elsewhere. In
// order:
//
//  1. bus.Provision the jetagent topology: it creates the dead-letter
//     stream ([bus.Topology.DLQStream]) that captures "<prefix>.dlq.>".
//  2. Create the stream of your topics, and a watermillbus.Subscriber on
//     it with a consumer whose MaxDeliver is at least Config.MaxAttempts
//     (better above it, to leave room for a dead-letter publish to be
//     retried) and, when handlers may take longer than AckWait or
//     breakers may hold messages, Prefetch 1 (heartbeats cover the message
//     in hand, not those buffered behind it).
//  3. [New] with the agent name and a bus.Publisher for the dead letters
//     (watermillbus.NewPublisher can publish the Router's messages through
//     the same one).
//  4. Add m.Middleware to the Router first (router.AddMiddleware), then
//     the handlers with AddConsumerHandler (AddNoPublisherHandler is
//     deprecated).
//
// Dead letters go to "<prefix>.dlq.<agent>.<subject>": the original
// subject in full (orders.created -> jetagent.dlq.billing.orders.created,
// so that "jetagent.dlq.billing.orders.>" selects them), except that a
// jetagent task subject of the agent, "<prefix>.tasks.<agent>.<type>",
// maps to "<prefix>.dlq.<agent>.<type>" as in the native runtime, and an
// unknown or wildcard subject to "<prefix>.dlq.<agent>.watermill". The
// copy carries the original's body, its metadata as headers (less the
// jetagent-* delivery keys) and its UUID in Watermill-Uuid.
//
// # Order with watermill's middleware
//
// Add this middleware first, so it is the outermost: it must see the
// final outcome of everything inside it, and the Router must nack or ack
// right after it returns. Inside it (added after it) go middleware that
// shapes a single attempt: middleware.Timeout (bound each attempt; the
// deadline error is transient), middleware.CorrelationID, your own
// instrumentation. Do not combine it with middleware that redoes its
// work: middleware.Retry retries inside the handler, sleeping, and
// middleware.PoisonQueue and middleware.CircuitBreaker replace outcomes
// this package decides (dead letters with more provenance, breakers that
// hold instead of failing). middleware.Recoverer is unnecessary (panics are
// recovered here); inside this middleware it is harmless.
//
// # Compared with the native runtime
//
// The jetagent runtime (package runtime) applies the same dispositions
// without watermill, to envelopes it decodes and validates itself, with
// replies, snapshots and a MAX_DELIVERIES sweeper; it terms dead-lettered
// deliveries (the Router can only ack or nack), and parks messages held by
// an open breaker aside so that other subjects keep flowing, where here a
// held message pauses the subscription that handed it out. It is also
// faster: the Router spends a goroutine and an extra channel hop on each
// message, which the runtime's dispatcher does not. docs/benchmarks.md
// (written by make bench) has the runtime's measured throughput against
// raw nats.go and the watermill-nats subscriber. Use this package to give
// an existing watermill application jetagent's resilience; use the
// runtime for new agents and for throughput.
package watermillmw
