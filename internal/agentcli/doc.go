// Package agentcli is the command line of cmd/agent: flag parsing, wiring
// of bus and runtime, output. It is internal: the commands are the
// interface, not this package.
//
// `agent run` (runAgents) wires, in this order: the configuration, the
// logger and metrics, the connection (an embedded server unless --nats),
// provisioning, one runtime per agent (and its status beacon), then the
// operations endpoint. Then it runs a group (github.com/oklog/run) of one
// actor per runtime, one for the endpoint and one for the signal: the
// first to return ends the group, a part that died with its error, which
// makes the process exit 1. On every path it then stops, in order: the
// beacons and agents (in parallel, finishing the tasks in hand), the
// endpoint, the spans, the connection.
package agentcli
