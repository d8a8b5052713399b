// Package natsflags turns the security flags shared by jetagent's commands
// (credentials, nkeys, tokens, user and password, TLS, inbox prefix) into
// nats.go connection options, and helps commands report the permissions a
// server refused.
//
// In order: Register adds the flags to a command's flag set; after parsing,
// Options resolves every setting (a flag wins over its JETAGENT_NATS_*
// environment variable), validates the combination and the files it names,
// and returns the options to pass to bus.Connect. One-shot commands wrap
// their context with FailFast and add its option, so that a request the
// server refuses for lack of permission fails at once with Violation's
// error instead of waiting for its timeout; long-running processes add
// LogAsyncErrors instead.
//
// No secret (token, password, key material) is ever part of an error, a
// log value or the flags' help text.
package natsflags
