// Package cliexit is how jetagent's commands (agent, replay) end: which
// exit code an error gives, and what they print on stderr.
//
// In order: a command builds its cobra tree and calls MarkUsageErrors on
// the root, which makes cobra's own complaints about a command line
// (unknown flags and commands, bad flag values, wrong argument counts,
// missing required flags) usage errors where cobra returns them. The
// command's own checks return UsageError or Usagef, and other special
// outcomes WithCode (Aborted, Partial, Interrupted). After Execute, Report
// prints the error and returns the code that Code gives it; main passes it
// to os.Exit.
//
// The codes are one list for all the commands, so that a number means the
// same in each, and scripts can rely on them: they never change value.
package cliexit
