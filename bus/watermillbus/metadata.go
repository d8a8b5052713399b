package watermillbus

import "errors"

// HeaderUUID carries a watermill message's UUID; the [Subscriber] restores
// the UUID from it.
const HeaderUUID = "Watermill-Uuid"

// Metadata keys the [Subscriber] sets on every message it hands out,
// describing that one delivery. [Publisher.Publish] does not send them (nor
// [MetadataNakDelay]) as headers, and the subscriber ignores headers of
// these names, so a received message can be re-published as it is.
const (
	// MetadataNumDelivered is the JetStream delivery count, "1" on the first
	// delivery; a Nack'ed message comes back with it incremented.
	MetadataNumDelivered = "jetagent-num-delivered"
	// MetadataStreamSeq is the message's sequence in its stream, stable
	// across redeliveries.
	MetadataStreamSeq = "jetagent-stream-seq"
	// MetadataStream is the name of the stream the message is stored in;
	// with MetadataStreamSeq it identifies the message.
	MetadataStream = "jetagent-stream"
	// MetadataSubject is the subject the message was published on; it
	// differs from the topic when the topic is a wildcard such as "orders.>".
	MetadataSubject = "jetagent-subject"
	// MetadataPublished is when the server stored the message, in RFC 3339
	// with nanoseconds (time.RFC3339Nano), UTC.
	MetadataPublished = "jetagent-published"
)

// MetadataNakDelay is the metadata key a handler (or middleware) sets on a
// message it is about to Nack to choose that message's redelivery delay: a
// Go duration string (time.ParseDuration), such as "1.5s". When the
// [Subscriber] sees the Nack it reads the key and asks the server for
// redelivery after that delay (NakWithDelay), instead of after
// [Config].NakDelay; "0s" redelivers at once. A value that does not parse,
// or is negative, is ignored (logged at Warn) and NakDelay applies. The key
// is read only at Nack time: set it before calling Nack (the watermill
// Router nacks after the handler returned an error, so a middleware sets
// it before returning). It is never sent as a header.
const MetadataNakDelay = "jetagent-nak-delay"

// isDeliveryKey reports whether k is a metadata key of the subscriber's,
// never copied from or to headers.
func isDeliveryKey(k string) bool {
	switch k {
	case MetadataNumDelivered, MetadataStreamSeq, MetadataStream, MetadataSubject, MetadataPublished, MetadataNakDelay:
		return true
	}
	return false
}

// ErrInvalidMetadata is returned by [Publisher.Publish] when a metadata key
// cannot be a NATS header name (empty, or with characters other than
// printable ASCII without any of `"(),/:;<=>?@[\]{}`).
var ErrInvalidMetadata = errors.New("watermillbus: metadata key is not a valid NATS header name")
