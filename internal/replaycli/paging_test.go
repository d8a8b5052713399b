package replaycli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
)

func TestListPagesWithAfter(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 5, 1, dlq.ReasonPermanent)
	r := run(t, "", false, "list", "--nats", url, "--limit", "2")
	if r.code != cliexit.OK || strings.Count(r.out, "\n") != 3 || !strings.Contains(r.stderr, "replay list --after 2 --limit 2") {
		t.Fatalf("first page: %+v", r)
	}
	r = run(t, "", false, "list", "--nats", url, "--limit", "2", "--after", "2", "--json")
	var got []summary
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || len(got) != 2 || got[0].ID != 3 || got[1].ID != 4 {
		t.Fatalf("second page: %v %+v", err, r)
	}
	r = run(t, "", false, "list", "--nats", url, "--limit", "2", "--after", "4")
	if r.code != cliexit.OK || strings.Count(r.out, "\n") != 2 || r.stderr != "" {
		t.Fatalf("last page: %+v; want one entry and no hint", r)
	}
}

func TestCompletionOffersIDsAgentsAndReasons(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 2, 1, dlq.ReasonPermanent)
	fill(t, conn, "billing", 1, 10, dlq.ReasonMalformed)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "show", "--nats", url, ""}, "1\techo permanent"},
		{[]string{"__complete", "replay", "--nats", url, "3"}, "3\tbilling malformed"},
		{[]string{"__complete", "list", "--nats", url, "--agent", ""}, "billing\t1 entry"},
		{[]string{"__complete", "stats", "--reason", ""}, "max_deliveries"},
	} {
		r := run(t, "", false, c.args...)
		if r.code != cliexit.OK || !strings.Contains(r.out, c.want) {
			t.Errorf("%v: %+v; want %q offered", c.args, r, c.want)
		}
	}
}

func TestReplayToSaysWhereItPublishes(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 1, 1, dlq.ReasonPermanent)
	to := topo.TaskSubject("echo2", "task.request")
	r := run(t, "", false, "replay", "--nats", url, "--yes", "--to", to)
	if r.code != cliexit.OK || !strings.Contains(r.stderr, "destination: "+to) || !strings.Contains(r.out, "1 replayed "+to) {
		t.Fatalf("replay --to: %+v", r)
	}
}
