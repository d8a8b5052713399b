package natsheader

import "testing"

func TestValidName(t *testing.T) {
	for k, want := range map[string]bool{
		"Nats-Msg-Id": true, "x_trace.id~1": true, "": false, "a b": false,
		"a:b": false, "caf\u00e9": false, "tab\t": false, "{x}": false,
	} {
		if got := ValidName(k); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", k, got, want)
		}
	}
}
