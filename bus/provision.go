package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates the streams and buckets of t that do not exist yet and
// checks that those that exist are configured as t asks. It is idempotent
// and safe to run from many processes at once.
//
// It returns an error wrapping [ErrConfigConflict] that lists every
// difference when an existing stream or bucket is configured differently;
// it never changes an existing one.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for _, want := range t.streamConfigs() {
		if err := ensureStream(ctx, js, want); err != nil {
			return err
		}
	}
	for _, want := range t.kvConfigs() {
		if err := ensureKV(ctx, js, want); err != nil {
			return err
		}
	}
	return nil
}

// ProvisionAgent creates the buckets that belong to agent alone (see
// [Topology.SnapshotBucket] and [Topology.RecordsBucket]) when they do not
// exist yet, and checks those
// that exist, like [Provision]: idempotent, safe from many processes at
// once, and an error wrapping [ErrConfigConflict] (never a change) when an
// existing bucket is configured differently. It returns an error wrapping
// [ErrInvalidName] for a bad agent name.
func ProvisionAgent(ctx context.Context, js jetstream.JetStream, t Topology, agent string) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := ValidateName(agent); err != nil {
		return fmt.Errorf("bus: provision agent: %w", err)
	}
	for _, want := range t.agentKVConfigs(agent) {
		if err := ensureKV(ctx, js, want); err != nil {
			return err
		}
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	for range 2 {
		s, err := js.Stream(ctx, want.Name)
		if err == nil {
			got := s.CachedInfo().Config
			if err := compareStream(want, got); err != nil {
				return err
			}
			return allowDirect(ctx, js, want, got)
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("bus: provision stream %s: %w", want.Name, err)
		}
		_, err = js.CreateStream(ctx, want)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("bus: provision stream %s: %w", want.Name, err)
		}
		// Another process created it between our lookup and create: compare.
	}
	return fmt.Errorf("bus: provision stream %s: created and deleted concurrently", want.Name)
}

// allowDirect turns direct gets on for a stream made before jetagent
// wanted them (the replies stream, for clients' look-ups): an additive
// change that leaves every message and consumer as it is. A user that
// may not update streams (an agent's role) leaves it off without failing:
// what it costs is the clients' look-ups, and each client says so once
// when its look-up fails (an administrator's Provision turns it on).
func allowDirect(ctx context.Context, js jetstream.JetStream, want, got jetstream.StreamConfig) error {
	if !want.AllowDirect || got.AllowDirect {
		return nil
	}
	got.AllowDirect = true
	// A refused request may only time out: a short budget of its own.
	uctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, _ = js.UpdateStream(uctx, got) // see above: not having it is not fatal
	return nil
}

// compareStream lists the settings jetagent relies on that differ.
func compareStream(want, got jetstream.StreamConfig) error {
	var diffs []string
	diff := func(field string, g, w any) {
		diffs = append(diffs, fmt.Sprintf("%s is %v, want %v", field, g, w))
	}
	ws, gs := slices.Clone(want.Subjects), slices.Clone(got.Subjects)
	slices.Sort(ws)
	slices.Sort(gs)
	if !slices.Equal(ws, gs) {
		diff("subjects", gs, ws)
	}
	if got.Retention != want.Retention {
		diff("retention", got.Retention, want.Retention)
	}
	if got.Storage != want.Storage {
		diff("storage", got.Storage, want.Storage)
	}
	if got.Replicas != want.Replicas {
		diff("replicas", got.Replicas, want.Replicas)
	}
	if got.Discard != want.Discard {
		diff("discard policy", got.Discard, want.Discard)
	}
	if got.MaxAge != want.MaxAge {
		diff("max age", got.MaxAge, want.MaxAge)
	}
	if got.MaxBytes != want.MaxBytes {
		diff("max bytes", got.MaxBytes, want.MaxBytes)
	}
	if got.MaxMsgs != want.MaxMsgs {
		diff("max messages", got.MaxMsgs, want.MaxMsgs)
	}
	if got.Duplicates != want.Duplicates {
		diff("duplicate window", got.Duplicates, want.Duplicates)
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: stream %s: %s", ErrConfigConflict, want.Name, strings.Join(diffs, "; "))
}

func ensureKV(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) error {
	for range 2 {
		kv, err := js.KeyValue(ctx, want.Bucket)
		if err == nil {
			st, err := kv.Status(ctx)
			if err != nil {
				return fmt.Errorf("bus: provision bucket %s: %w", want.Bucket, err)
			}
			return compareKV(want, st.Config())
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("bus: provision bucket %s: %w", want.Bucket, err)
		}
		_, err = js.CreateKeyValue(ctx, want)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("bus: provision bucket %s: %w", want.Bucket, err)
		}
	}
	return fmt.Errorf("bus: provision bucket %s: created and deleted concurrently", want.Bucket)
}

func compareKV(want, got jetstream.KeyValueConfig) error {
	var diffs []string
	if got.History != want.History {
		diffs = append(diffs, fmt.Sprintf("history is %d, want %d", got.History, want.History))
	}
	if got.TTL != want.TTL {
		diffs = append(diffs, fmt.Sprintf("ttl is %v, want %v", got.TTL, want.TTL))
	}
	if got.Storage != want.Storage {
		diffs = append(diffs, fmt.Sprintf("storage is %v, want %v", got.Storage, want.Storage))
	}
	if got.Replicas != want.Replicas {
		diffs = append(diffs, fmt.Sprintf("replicas is %d, want %d", got.Replicas, want.Replicas))
	}
	if got.LimitMarkerTTL != want.LimitMarkerTTL {
		diffs = append(diffs, fmt.Sprintf("limit marker ttl is %v, want %v", got.LimitMarkerTTL, want.LimitMarkerTTL))
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: bucket %s: %s", ErrConfigConflict, want.Bucket, strings.Join(diffs, "; "))
}
