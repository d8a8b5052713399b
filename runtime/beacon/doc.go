// Package beacon announces what the replicas of an agent are doing, so that
// operators' tools (the web console of `agent console`) can show what the
// server does not know: the state of each subject's circuit breaker, the
// handlers running now, and how many replicas are up.
//
// A [Beacon] publishes a [Report] as JSON on the core NATS subject
// "<prefix>.status.<agent>" (nothing is stored): every Interval, at once
// when a breaker changes state, and a last one when it stops. Compose it
// in this order: New, use Observer as the runtime's Config.Observer (it
// forwards every event to the observer it wraps), create and start the
// runtime, Start, and Stop before stopping the runtime.
//
// The agent's NATS user needs permission to publish its status subject
// (docs/security.md).
//
// What it may import of jetagent is its row of the table "Packages and the
// direction of imports" in docs/architecture.md (checked by TestImportRules
// in docs/architecture_test.go).
package beacon
