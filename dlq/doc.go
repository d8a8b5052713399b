// Package dlq holds jetagent's dead letters: messages that could not be
// processed, kept with enough provenance to understand and replay them.
//
// A dead letter is the original message (body and headers, unchanged) with
// provenance headers added (see [Record]), published on the DLQ subject
// "<prefix>.dlq.<agent>.<payload_type>". Its Nats-Msg-Id is derived from the
// original's stream and sequence, so dead-lettering the same delivery twice
// stores it once.
//
// What it may import of jetagent is its row of the table "Packages and the
// direction of imports" in docs/architecture.md (checked by TestImportRules
// in docs/architecture_test.go).
package dlq
