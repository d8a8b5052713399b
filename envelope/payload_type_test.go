package envelope

import (
	"strings"
	"testing"
)

func TestPayloadTypeValid(t *testing.T) {
	tests := map[PayloadType]bool{
		TaskRequest:                          true,
		"a":                                  true,
		"custom.analysis_v2":                 true,
		"a-b.c_d.0-9":                        true,
		PayloadType(strings.Repeat("a", 64)): true,
		PayloadType(strings.Repeat("a", 65)): false,
		"":                                   false,
		".task":                              false,
		"task.":                              false,
		"task..request":                      false,
		"Task.request":                       false,
		"task request":                       false,
		"task.*":                             false,
		"task.>":                             false,
		"tâche":                              false,
		"task\x00":                           false,
	}
	for typ, want := range tests {
		if got := typ.Valid(); got != want {
			t.Errorf("PayloadType(%q).Valid() = %v, want %v", typ, got, want)
		}
	}
}

func TestPayloadTypeStandard(t *testing.T) {
	standard := []PayloadType{TaskRequest, TaskResponse, TaskUpdate, TaskCancel, StateQuery, StateRestore, MessageSend}
	for _, typ := range standard {
		if !typ.Standard() || !typ.Valid() {
			t.Errorf("%s: Standard %v, Valid %v; want both", typ, typ.Standard(), typ.Valid())
		}
		if typ.String() != string(typ) {
			t.Errorf("String() = %q, want %q", typ.String(), string(typ))
		}
	}
	for _, typ := range []PayloadType{"task.requests", "task", "error", ""} {
		if typ.Standard() {
			t.Errorf("%q reported as standard", typ)
		}
	}
}
