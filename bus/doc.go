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
// Watermill's message.Publisher and message.Subscriber on these are in
// package bus/watermillbus, so that bus builds without watermill.
//
// The order of use is: start or connect, provision, then publish and subscribe.
//
// What it may import of jetagent is its row of the table "Packages and the
// direction of imports" in docs/architecture.md (checked by TestImportRules
// in docs/architecture_test.go).
package bus
