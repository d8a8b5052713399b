// Package watermillbus is jetagent's bus seen through watermill's
// message.Publisher and message.Subscriber: for watermill applications (and
// runtime/watermillmw) on the same NATS JetStream streams. It lives apart
// from package bus so that programs that do not use watermill do not build
// it.
//
// A watermill topic is a subject captured by a stream. [Publisher] sends
// each message through a bus.Publisher with Nats-Msg-Id = topic + ":" +
// UUID, so watermill's retries are deduplicated by the server.
// [Subscriber] pulls each topic from a durable consumer per ConsumerGroup
// (no group: a consumer per Subscribe that starts at the stream's first
// message), hands out one message at a time with the delivery described in
// its metadata ([MetadataNumDelivered] and its siblings), keeps it alive
// with InProgress heartbeats while it is in hand, and naks it with the
// delay a handler chose ([MetadataNakDelay]).
//
// The order of use is: connect (bus.Connect or bus.StartEmbedded), create
// the stream of the topics, then [NewPublisher] and [NewSubscriber].
package watermillbus
