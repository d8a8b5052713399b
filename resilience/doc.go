// Package resilience holds jetagent's failure-handling building blocks,
// usable on any function, not only on the bus: a backoff policy that is a
// pure function of the attempt number.
//
// resilience imports nothing of jetagent.
package resilience
