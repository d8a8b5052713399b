// Package bus is jetagent's connection to NATS JetStream.
//
// It owns everything that touches the server directly:
//
//   - [StartEmbedded] runs nats-server in process (JetStream on disk, a loopback
//     listener so other processes can join) and [Connect] joins a server by URL;
//   - [Topology] names the streams, subjects and KV buckets, and [Provision]
//     creates them idempotently, refusing with [ErrConfigConflict] when an
//     existing one is configured differently;
//   - [Publisher] publishes envelopes (Nats-Msg-Id = envelope id, so a re-sent
//     copy inside the duplicate window is dropped by the server) and waits for
//     the publish acknowledgements;
//   - [Subscriber] pulls from one durable consumer and hands each [Delivery],
//     with its JetStream metadata and settlement methods, to a callback.
//
// Publisher and [WatermillSubscriber] also implement watermill's
// message.Publisher and message.Subscriber. A watermill topic is a subject
// captured by a stream; a ConsumerGroup is one durable consumer per topic
// (no group: a consumer per Subscribe that starts at the stream's first
// message); Nats-Msg-Id is topic + ":" + UUID, so watermill's retries are
// deduplicated by the server.
//
// The order of use is: start or connect, provision, then publish and subscribe.
// bus imports envelope and nothing else of jetagent.
package bus
