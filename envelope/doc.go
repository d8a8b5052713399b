// Package envelope defines the message that jetagent agents exchange over NATS
// JetStream: the Envelope, its payload types, its identifiers, its msgpack
// wire codec, its validation, and its JSON form for CLIs and sidecar agents.
//
// It imports nothing else from jetagent but internal/errkind (the one
// ErrMalformed it shares with package resilience); everything else imports it.
//
// # Wire shape
//
// An encoded envelope is one msgpack map with string keys, written in this
// order with empty optional keys left out:
//
//	id, version, sender, recipient, payload_type,   (required)
//	payload,                                        (one msgpack value, embedded as is)
//	correlation_id, trace_id,
//	timestamp,                                      (required; msgpack timestamp, UTC)
//	reply_to, task_id, deadline, idempotency_key,
//	extensions                                      (map of str to str, sorted by key)
//
// Marshal always produces this canonical form, so equal envelopes encode to
// equal bytes. Unmarshal also accepts non-canonical input: keys in any order,
// nil for an absent field, longer headers than needed, unknown keys (skipped,
// for forward compatibility). docs/wire.md specifies the format precisely, with
// the NATS headers and subjects that go with it; testdata/golden holds vectors
// for implementations in other languages.
//
// The payload stays raw msgpack in Go (Envelope.Payload): EncodePayload and
// DecodePayload convert it from and to the handler's own types.
//
// # Receiving
//
// Parse is the one call a consumer needs. It works in this order, and stops
// at the first failure:
//
//  1. size: longer than Limits.MaxSize is ErrTooLarge, before any decoding;
//  2. decode (Unmarshal): anything that is not a well-formed envelope is
//     ErrMalformed; the decoder never panics, never trusts a declared length
//     beyond the bytes present, and copies what it keeps (the input buffer may
//     be reused at once);
//  3. validate (Envelope.Validate): ErrMissingField, ErrInvalidField,
//     ErrBadTimestamp (clock skew against the receive time), then ErrExpired
//     (deadline against the clock).
//
// Every error wraps exactly one of these sentinels, for errors.Is, and most
// are a *FieldError naming the field, for errors.As. ErrUnknownType is defined
// here but returned by the runtime, which alone knows which payload types have
// handlers.
//
// # Sending
//
// New builds a request (fresh ULID, trace id and timestamp); NewReply builds
// the answer to one, with an id derived from the request's (DeriveID), so that
// replies to a redelivered request are dropped by JetStream's duplicate
// window. Marshal, or AppendMarshal into a reused buffer, encodes it.
package envelope
