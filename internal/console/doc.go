// Package console is jetagent's web console for operators (`agent
// console`): the agents' consumers, breakers and throughput, the
// dead-letter queue (filter, inspect, replay, purge), the tasks' snapshots
// (inspect, cancel), and a live page of what happens.
//
// It is one HTTP server with server-rendered pages (html/template, assets
// embedded), Server-Sent Events for the live parts and a small script; the
// pages work without it. It reads and acts only through the public APIs of
// dlq, snapshot, bus and runtime/beacon, on one NATS connection whose user
// needs the operator role of docs/security.md. Replays go through
// dlq.Store.Replay, in chunks, so that a cancel never splits a call.
//
// Security: without authentication it listens on loopback only (and answers
// to loopback host names only); any other address needs a token or a
// credentials file (Auth), users have the operator or the read-only viewer
// role, every action needs the page's CSRF token and a same-origin request,
// and every action is written to the audit log, which the console shows.
package console
