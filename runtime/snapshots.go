package runtime

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/snapshot"
)

// agentBuckets makes sure, once, that the buckets the agent has to itself
// exist and are configured as the topology says (bus.ProvisionAgent:
// created with an administrator's rights, only checked with an agent's).
// It runs when the runtime first needs one of them, never at Start: an
// agent that never checkpoints needs none.
type agentBuckets struct {
	done atomic.Bool
	mu   sync.Mutex
}

// ensureAgentBuckets provisions (or checks) the agent's own buckets the
// first time it is called successfully; later calls return at once.
func (r *Runtime) ensureAgentBuckets(ctx context.Context) error {
	b := &r.agentBuckets
	if b.done.Load() {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done.Load() {
		return nil
	}
	if err := bus.ProvisionAgent(ctx, r.conn.JetStream(), r.cfg.Topology, r.cfg.Agent); err != nil {
		return fmt.Errorf("runtime %s: the agent's buckets: %w", r.cfg.Agent, err)
	}
	b.done.Store(true)
	return nil
}

// ownSnapshots is the runtime's default snapshot store: the topology's KV
// buckets, the agent's own ensured (ensureAgentBuckets) before its first
// use. Other agents' buckets (state.restore) are only opened.
type ownSnapshots struct {
	kv    *snapshot.KV
	agent string
	rt    *Runtime
}

var _ snapshot.Store = (*ownSnapshots)(nil)

func (o *ownSnapshots) ensure(ctx context.Context, agent string) error {
	if agent != o.agent {
		return nil
	}
	return o.rt.ensureAgentBuckets(ctx)
}

func (o *ownSnapshots) Save(ctx context.Context, s *snapshot.Snapshot, expected uint64) (uint64, error) {
	if s != nil {
		if err := o.ensure(ctx, s.Agent); err != nil {
			return 0, err
		}
	}
	return o.kv.Save(ctx, s, expected)
}

func (o *ownSnapshots) Load(ctx context.Context, agent, taskID string) (*snapshot.Snapshot, error) {
	if err := o.ensure(ctx, agent); err != nil {
		return nil, err
	}
	return o.kv.Load(ctx, agent, taskID)
}

func (o *ownSnapshots) History(ctx context.Context, agent, taskID string, n int) ([]*snapshot.Snapshot, error) {
	if err := o.ensure(ctx, agent); err != nil {
		return nil, err
	}
	return o.kv.History(ctx, agent, taskID, n)
}

func (o *ownSnapshots) Delete(ctx context.Context, agent, taskID string) error {
	if err := o.ensure(ctx, agent); err != nil {
		return err
	}
	return o.kv.Delete(ctx, agent, taskID)
}

func (o *ownSnapshots) List(ctx context.Context, agent string) ([]*snapshot.Snapshot, error) {
	if err := o.ensure(ctx, agent); err != nil {
		return nil, err
	}
	return o.kv.List(ctx, agent)
}

func (o *ownSnapshots) Watch(ctx context.Context, agent string) (<-chan snapshot.Event, error) {
	if err := o.ensure(ctx, agent); err != nil {
		return nil, err
	}
	return o.kv.Watch(ctx, agent)
}
