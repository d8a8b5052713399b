// Package version reports what a jetagent binary was built from: module
// version, commit, Go, and the NATS libraries it carries, all read from
// the build information the Go toolchain embeds.
package version

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Info is what a binary was built from.
type Info struct {
	// Module is the main module's version: a tag, a pseudo-version, or
	// "(devel)" for a build from a work tree.
	Module string `json:"module"`
	// Commit, CommitTime and Modified come from the version control
	// system; empty when the build did not record them (go run, or
	// -buildvcs=false).
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	NATSServer string `json:"nats_server"`
	NATSGo     string `json:"nats_go"`
}

// Read returns the Info of the running binary.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Module: "unknown", Go: "unknown", NATSServer: "unknown", NATSGo: "unknown"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Module: bi.Main.Version, Go: bi.GoVersion, NATSServer: "not linked", NATSGo: "not linked"}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.CommitTime = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		v := d.Version
		if d.Replace != nil {
			v += " (replaced by " + d.Replace.Path + " " + d.Replace.Version + ")"
		}
		switch d.Path {
		case "github.com/nats-io/nats-server/v2":
			in.NATSServer = v
		case "github.com/nats-io/nats.go":
			in.NATSGo = v
		}
	}
	return in
}

// Command returns the "version" subcommand of program: it prints the Info
// as text, or as JSON with --json.
func Command(program string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go and NATS library versions of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := Read()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			_, err := fmt.Fprint(cmd.OutOrStdout(), program+" "+in.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// SetOn makes root answer --version with the Info and adds the version
// subcommand.
func SetOn(root *cobra.Command) {
	root.Version = Read().String()
	root.SetVersionTemplate("{{.Name}} {{.Version}}")
	root.AddCommand(Command(root.Name()))
}

// String renders the Info for "NAME version" and "NAME --version".
func (in Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", in.Module)
	commit := "unknown (not recorded: go run and -buildvcs=false builds leave it out; go build records it)"
	if in.Commit != "" {
		commit = in.Commit
		if in.CommitTime != "" {
			commit += " (" + in.CommitTime + ")"
		}
		if in.Modified {
			commit += ", with uncommitted changes"
		}
	}
	fmt.Fprintf(&b, "  commit:      %s\n", commit)
	fmt.Fprintf(&b, "  go:          %s\n", in.Go)
	fmt.Fprintf(&b, "  nats-server: %s\n", in.NATSServer)
	fmt.Fprintf(&b, "  nats.go:     %s\n", in.NATSGo)
	return b.String()
}
