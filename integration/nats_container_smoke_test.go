package integration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestNATSContainerSurvivesRestart(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	srv := startNATS(t, NATSOptions{ServerName: "smoke"})
	nc, reconnects, reconnected := connectNATS(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "SMOKE",
		Subjects: []string{"smoke.>"},
		Storage:  jetstream.FileStorage,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}

	const total = 100
	futures := make([]jetstream.PubAckFuture, total)
	for i := range total {
		id := fmt.Sprintf("msg-%03d", i)
		futures[i], err = js.PublishAsync("smoke.msg", []byte(id), jetstream.WithMsgID(id))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatalf("waiting for publish acks: %v (pending %d)", ctx.Err(), js.PublishAsyncPending())
	}
	// data of each stream sequence, as the acks reported it
	published := make(map[uint64]string, total)
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				t.Fatalf("message %d acked as a duplicate", i)
			}
			if prev, dup := published[ack.Sequence]; dup {
				t.Fatalf("sequence %d acked for %q and %q", ack.Sequence, prev, f.Msg().Data)
			}
			published[ack.Sequence] = string(f.Msg().Data)
		case err := <-f.Err():
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	if err := srv.Stop(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, reconnected, "the client to reconnect"); err != nil {
		t.Fatal(err)
	}
	if got := reconnects.Load(); got != 1 {
		t.Errorf("reconnect handler called %d times, want 1", got)
	}

	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info after restart: %v", err)
	}
	if s := info.State; s.Msgs != total || s.FirstSeq != 1 || s.LastSeq != total {
		t.Fatalf("stream after restart: %d messages, sequences %d..%d; want %d, 1..%d", s.Msgs, s.FirstSeq, s.LastSeq, total, total)
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "check",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	seen := make(map[uint64]bool, total)
	for len(seen) < total && ctx.Err() == nil {
		batch, err := cons.Fetch(total-len(seen), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for msg := range batch.Messages() {
			meta, err := msg.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			seq := meta.Sequence.Stream
			if seen[seq] {
				t.Errorf("sequence %d delivered twice", seq)
			}
			seen[seq] = true
			if want, ok := published[seq]; !ok || string(msg.Data()) != want {
				t.Errorf("sequence %d: data %q, published %q (known: %t)", seq, msg.Data(), want, ok)
			}
			if err := msg.Ack(); err != nil {
				t.Fatalf("ack %d: %v", seq, err)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("fetch batch: %v", err)
		}
	}
	if len(seen) != total {
		t.Fatalf("read %d distinct messages after restart, want %d", len(seen), total)
	}
	extra, err := cons.FetchNoWait(1)
	if err != nil {
		t.Fatalf("fetch beyond the end: %v", err)
	}
	for msg := range extra.Messages() {
		t.Errorf("unexpected message after all %d: %q", total, msg.Data())
	}
}

// TestNATSContainerKillPauseAndNetwork covers the rest of the NATSContainer surface: two
// servers clustered over a Docker network by alias, Pause/Unpause, Kill/Start and Restart.
func TestNATSContainerKillPauseAndNetwork(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	nw := newNetwork(t)
	cluster := func(name, peer string) NATSOptions {
		return NATSOptions{ServerName: name, Network: nw, Args: []string{
			"--cluster_name", "harness", "--cluster", "nats://0.0.0.0:6222", "--routes", "nats://" + peer + ":6222",
		}}
	}
	a := startNATS(t, cluster("n1", "n2"))
	b := startNATS(t, cluster("n2", "n1"))
	if err := waitForRoutes(ctx, a, 1); err != nil {
		t.Fatal(err)
	}

	// A message published on b reaches a subscriber on a: the route goes through the network.
	ncA, _, _ := connectNATS(t, a.URL())
	ncB, reconnectsB, reconnectedB := connectNATS(t, b.URL())
	sub, err := ncA.SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := ncA.Flush(); err != nil {
		t.Fatal(err)
	}
	// Interest crosses the route asynchronously: publish until the subscriber sees one.
	if err := publishUntilReceived(ctx, ncB, sub, "hello"); err != nil {
		t.Fatal(err)
	}

	// Paused: the connection stays open, but the server does not answer.
	if err := b.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ncB.FlushTimeout(500 * time.Millisecond); err == nil {
		t.Error("flush to a paused server succeeded")
	}
	if err := b.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ncB.FlushTimeout(5 * time.Second); err != nil {
		t.Errorf("flush after unpause: %v", err)
	}

	// Killed and started again: same URL, the client comes back by itself.
	if err := b.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, reconnectedB, "the client to reconnect after kill"); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, reconnectedB, "the client to reconnect after restart"); err != nil {
		t.Fatal(err)
	}
	if got := reconnectsB.Load(); got != 2 {
		t.Errorf("reconnects = %d, want 2", got)
	}
	if err := waitForRoutes(ctx, a, 1); err != nil {
		t.Fatal(err)
	}
	if logs := b.Logs(ctx); len(logs) == 0 {
		t.Error("no server logs")
	}
}

// publishUntilReceived publishes on subject until sub receives one of the messages, waiting
// up to 50ms for each, or until ctx ends.
func publishUntilReceived(ctx context.Context, nc *nats.Conn, sub *nats.Subscription, subject string) error {
	for ctx.Err() == nil {
		if err := nc.Publish(subject, []byte("hi")); err != nil {
			return err
		}
		if _, err := sub.NextMsg(50 * time.Millisecond); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no message on %s across the route: %w", subject, context.Cause(ctx))
}
