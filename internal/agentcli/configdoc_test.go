package agentcli

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the settings table of docs/configuration.md from the code")

const (
	configDocPath = "../../docs/configuration.md"
	tableBegin    = "<!-- settings table: generated from internal/agentcli/config.go; go test ./internal/agentcli -run TestConfigurationDoc -update -->\n"
	tableEnd      = "<!-- end of settings table -->\n"
	tableHeader   = "| key | flag | environment | default | what it does |\n|---|---|---|---|---|\n"
)

// settingsTable renders the settings as the table of docs/configuration.md.
func settingsTable() string {
	var b strings.Builder
	b.WriteString(tableHeader)
	for _, s := range settings {
		key := s.key
		switch s.scope {
		case scopeAgent:
			key = "agents[]." + key
		case scopeRule:
			key = "agents[].breaker.rules[]." + key
		}
		def := s.defDoc
		switch {
		case s.required:
			def = "required"
		case def == "":
			def = "`" + formatValue(s.kind, s.def) + "`"
		}
		cell := func(v string) string {
			if v == "" {
				return "(file only)"
			}
			return "`" + v + "`"
		}
		flagName := s.flag
		if flagName != "" {
			flagName = "--" + flagName
		}
		b.WriteString("| `" + key + "` | " + cell(flagName) + " | " + cell(s.env) + " | " + def + " | " + s.usage + " |\n")
	}
	return b.String()
}

// The defaults are documented in one place, docs/configuration.md, in a
// table generated from the settings table, whose defaults are the Go
// constants of the packages: the doc cannot drift from the code.
func TestConfigurationDocIsCurrent(t *testing.T) {
	raw, err := os.ReadFile(configDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	before, rest, ok := strings.Cut(doc, tableBegin)
	old, after, ok2 := strings.Cut(rest, tableEnd)
	if !ok || !ok2 {
		t.Fatalf("%s has no generated settings table (markers %q ... %q)", configDocPath, tableBegin, tableEnd)
	}
	want := settingsTable()
	if old == want {
		return
	}
	if *update {
		if err := os.WriteFile(configDocPath, []byte(before+tableBegin+want+tableEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the settings table of %s", configDocPath)
		return
	}
	t.Errorf("the settings table of %s is stale; run: go test ./internal/agentcli -run TestConfigurationDoc -update\n--- in the doc\n%s--- from the code\n%s", configDocPath, old, want)
}
