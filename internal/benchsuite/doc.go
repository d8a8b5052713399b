// Package benchsuite measures jetagent against hand-written nats.go code,
// side by side in one run on one embedded server, for cmd/bench. Every
// measurement is a pair (raw, jetagent) run alternately for several rounds;
// the table reports medians, spreads and ratios, because absolute figures
// drift between machines and between runs.
package benchsuite
