package bus

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestParseAckSubject(t *testing.T) {
	for _, tc := range []struct {
		subject string
		ok      bool
		want    ackMeta
	}{
		{"$JS.ACK.TASKS.echo.3.41.17.1700000000123456789.5", true,
			ackMeta{stream: "TASKS", consumer: "echo", delivered: 3, streamSeq: 41, consumerSeq: 17, timestamp: 1700000000123456789, pending: 5}},
		{"$JS.ACK._.ACCHASH.TASKS.echo.1.2.3.4.0.RANDOM", true,
			ackMeta{stream: "TASKS", consumer: "echo", delivered: 1, streamSeq: 2, consumerSeq: 3, timestamp: 4}},
		{"$JS.ACK.hub.ACCHASH.TASKS.echo.1.2.3.4.0", true, // no trailing token
			ackMeta{stream: "TASKS", consumer: "echo", delivered: 1, streamSeq: 2, consumerSeq: 3, timestamp: 4}},
		{"$JS.ACK.hub.ACCHASH.TASKS.echo.1.2.3.4.0.tok.more", true, // later tokens are ignored
			ackMeta{stream: "TASKS", consumer: "echo", delivered: 1, streamSeq: 2, consumerSeq: 3, timestamp: 4}},
		{"", false, ackMeta{}},
		{"_INBOX.abc", false, ackMeta{}},
		{"$JS.ACK.", false, ackMeta{}},
		{"$JS.ACK.TASKS.echo.1.2.3.4", false, ackMeta{}},                      // too short
		{"$JS.ACK.x.TASKS.echo.1.2.3.4.0", false, ackMeta{}},                  // 8 tokens: neither form
		{"$JS.ACK.TASKS.echo.one.2.3.4.0", false, ackMeta{}},                  // not a number
		{"$JS.ACK.TASKS.echo.1.2.3.-4.0", false, ackMeta{}},                   // negative
		{"$JS.ACK.TASKS.echo.1.2.3.99999999999999999999.0", false, ackMeta{}}, // overflows
		{"$JS.ACK.TASKS.echo.1.2.3.18446744073709551615.0", false, ackMeta{}}, // not an int64 time
		{"$JS.ACK..echo.1.2.3.4.0", false, ackMeta{}},                         // empty stream
	} {
		got, ok := parseAckSubject(tc.subject)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseAckSubject(%q) = %+v, %v; want %+v, %v", tc.subject, got, ok, tc.want, tc.ok)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		parseAckSubject("$JS.ACK._.ACCHASH.TASKS.echo.1.2.3.1700000000123456789.0.RANDOM")
	})
	if allocs != 0 {
		t.Errorf("parseAckSubject allocates %v times", allocs)
	}
}

// newDelivery must read what nats.go's own Metadata reads, from subjects
// a real server writes.
func TestNewDeliveryMatchesMetadata(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	pub := NewPublisher(conn.JetStream())
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	for i := range 3 {
		env, _ := envelope.New("t", "echo", envelope.TaskRequest, i)
		if _, err := pub.PublishEnvelope(ctx, subject, env); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "meta", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: subject,
	}); err != nil {
		t.Fatal(err)
	}
	legacy, err := conn.NATS().JetStream()
	if err != nil {
		t.Fatal(err)
	}
	pull, err := legacy.PullSubscribe(subject, "meta", nats.Bind(topo.TasksStream(), "meta"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(m *nats.Msg) {
		t.Helper()
		if _, ok := parseAckSubject(m.Reply); !ok {
			t.Fatalf("the fast path did not take the server's subject %q", m.Reply)
		}
		d, err := newDelivery(conn.NATS(), m)
		if err != nil {
			t.Fatal(err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if d.NumDelivered != md.NumDelivered || d.StreamSeq != md.Sequence.Stream || d.ConsumerSeq != md.Sequence.Consumer ||
			d.Pending != md.NumPending || !d.Published.Equal(md.Timestamp) || d.Stream != md.Stream || d.Consumer != md.Consumer {
			t.Errorf("delivery %+v, nats.go metadata %+v", d, md)
		}
	}
	msgs, err := pull.Fetch(3, nats.MaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		check(m)
		if i == 0 {
			if err := m.Nak(); err != nil { // comes back with NumDelivered 2
				t.Fatal(err)
			}
		}
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d, want 3", len(msgs))
	}
	again, err := pull.Fetch(1, nats.MaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := again[0].Metadata(); md.NumDelivered != 2 {
		t.Fatalf("redelivery NumDelivered %d, want 2", md.NumDelivered)
	}
	check(again[0])
}
