// Package snapshottest is the conformance suite of snapshot.Store: the
// semantics every implementation must share, so that the runtime behaves
// the same on the in-memory store as on the KV bucket.
//
// Use it from a test of the implementation:
//
//	func TestConformance(t *testing.T) {
//		snapshottest.Run(t, func(t *testing.T) snapshot.Store {
//			return snapshot.NewMemory(0)
//		})
//	}
package snapshottest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/snapshot"
)

// waitFor bounds every wait on a watcher: a failure guard, not a sleep.
const waitFor = 10 * time.Second

// Agents are the agent names the suite uses. A store that keeps each
// agent apart (a KV bucket per agent) must have a place for each of them.
var Agents = []string{"a", "ab", "A", "b", "b-a", "nobody"}

// Run runs the suite as parallel subtests of t. Each subtest calls
// newStore once and expects an empty store of its own, safe for
// concurrent use, that keeps at least 3 revisions per task, holds the
// snapshots of every agent in Agents, and supports Snapshot.TTL.
func Run(t *testing.T, newStore func(t *testing.T) snapshot.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s snapshot.Store)
	}{
		{"CreateThenConflict", testCreateThenConflict},
		{"UpdateWithRevision", testUpdateWithRevision},
		{"UpdateMissingConflicts", testUpdateMissing},
		{"LoadLatest", testLoadLatest},
		{"NotFound", testNotFound},
		{"History", testHistory},
		{"Delete", testDelete},
		{"DeleteMissing", testDeleteMissing},
		{"ListByAgent", testList},
		{"Watch", testWatch},
		{"WatchClosesOnCancel", testWatchCloses},
		{"OddTaskIDs", testOddTaskIDs},
		{"Invalid", testInvalid},
		{"RacersOneWinnerPerRound", testRacersRounds},
		{"RacersNoLostUpdate", testRacersFree},
		{"NoAliasing", testNoAliasing},
		{"TTL", testTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

func context30s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

// snap returns a working snapshot at step with state "state-<step>".
func snap(agent, taskID string, step int) *snapshot.Snapshot {
	return &snapshot.Snapshot{
		Agent:   agent,
		TaskID:  taskID,
		Step:    step,
		Running: step + 1,
		Owner:   "delivery-" + fmt.Sprint(step),
		Status:  snapshot.Working,
		State:   []byte(fmt.Sprintf("state-%d", step)),
		Updated: epoch.Add(time.Duration(step) * time.Second),
	}
}

func save(t *testing.T, s snapshot.Store, sn *snapshot.Snapshot, expected uint64) uint64 {
	t.Helper()
	rev, err := s.Save(context30s(t), sn, expected)
	if err != nil {
		t.Fatalf("Save(%s/%q, step %d, expected %d): %v", sn.Agent, sn.TaskID, sn.Step, expected, err)
	}
	if rev == 0 {
		t.Fatalf("Save(%s/%q) returned revision 0", sn.Agent, sn.TaskID)
	}
	return rev
}

func load(t *testing.T, s snapshot.Store, agent, taskID string) *snapshot.Snapshot {
	t.Helper()
	got, err := s.Load(context30s(t), agent, taskID)
	if err != nil {
		t.Fatalf("Load(%s/%q): %v", agent, taskID, err)
	}
	return got
}

// same fails t unless got has want's fields and revision rev.
func same(t *testing.T, got, want *snapshot.Snapshot, rev uint64) {
	t.Helper()
	if got == nil {
		t.Fatalf("got nil snapshot, want %s/%q step %d", want.Agent, want.TaskID, want.Step)
	}
	if got.Agent != want.Agent || got.TaskID != want.TaskID || got.Step != want.Step ||
		got.Running != want.Running || got.Owner != want.Owner || got.Status != want.Status ||
		!bytes.Equal(got.State, want.State) || !got.Updated.Equal(want.Updated) {
		t.Fatalf("got %s/%q step %d running %d owner %q status %s state %q updated %v,\n"+
			"want %s/%q step %d running %d owner %q status %s state %q updated %v",
			got.Agent, got.TaskID, got.Step, got.Running, got.Owner, got.Status, got.State, got.Updated,
			want.Agent, want.TaskID, want.Step, want.Running, want.Owner, want.Status, want.State, want.Updated)
	}
	if got.Revision != rev {
		t.Fatalf("%s/%q: revision %d, want %d", got.Agent, got.TaskID, got.Revision, rev)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

func testCreateThenConflict(t *testing.T, s snapshot.Store) {
	first := snap("a", "t1", 1)
	rev := save(t, s, first, 0)
	_, err := s.Save(context30s(t), snap("a", "t1", 2), 0)
	wantErr(t, "second create", err, snapshot.ErrConflict)
	same(t, load(t, s, "a", "t1"), first, rev) // the loser wrote nothing
}

func testUpdateWithRevision(t *testing.T, s snapshot.Store) {
	rev1 := save(t, s, snap("a", "t1", 1), 0)
	second := snap("a", "t1", 2)
	rev2 := save(t, s, second, rev1)
	if rev2 <= rev1 {
		t.Fatalf("revision after update %d, not above %d", rev2, rev1)
	}
	_, err := s.Save(context30s(t), snap("a", "t1", 3), rev1)
	wantErr(t, "update with stale revision", err, snapshot.ErrConflict)
	_, err = s.Save(context30s(t), snap("a", "t1", 3), rev2+1000)
	wantErr(t, "update with future revision", err, snapshot.ErrConflict)
	same(t, load(t, s, "a", "t1"), second, rev2)
}

func testUpdateMissing(t *testing.T, s snapshot.Store) {
	other := save(t, s, snap("a", "other", 1), 0)
	_, err := s.Save(context30s(t), snap("a", "t1", 1), other)
	wantErr(t, "update of a missing task", err, snapshot.ErrConflict)
	_, err = s.Load(context30s(t), "a", "t1")
	wantErr(t, "load after failed update", err, snapshot.ErrNotFound)
}

func testLoadLatest(t *testing.T, s snapshot.Store) {
	rev := save(t, s, snap("a", "t1", 1), 0)
	var last *snapshot.Snapshot
	for step := 2; step <= 4; step++ {
		last = snap("a", "t1", step)
		last.Status = []snapshot.Status{snapshot.Working, snapshot.InputRequired, snapshot.Completed}[step-2]
		rev = save(t, s, last, rev)
	}
	same(t, load(t, s, "a", "t1"), last, rev)

	// Zero and empty fields round-trip as zero.
	bare := &snapshot.Snapshot{Agent: "a", TaskID: "bare", Status: snapshot.Submitted}
	brev := save(t, s, bare, 0)
	got := load(t, s, "a", "bare")
	same(t, got, bare, brev)
	if !got.Updated.IsZero() || len(got.State) != 0 {
		t.Fatalf("bare snapshot came back with updated %v, state %q", got.Updated, got.State)
	}
}

func testNotFound(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	save(t, s, snap("a", "t1", 1), 0)
	_, err := s.Load(ctx, "a", "t2")
	wantErr(t, "Load of a missing task", err, snapshot.ErrNotFound)
	_, err = s.Load(ctx, "b", "t1")
	wantErr(t, "Load of another agent's task", err, snapshot.ErrNotFound)
	_, err = s.History(ctx, "a", "t2", 5)
	wantErr(t, "History of a missing task", err, snapshot.ErrNotFound)
}

func testHistory(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	var revs []uint64
	var snaps []*snapshot.Snapshot
	var rev uint64
	for step := 1; step <= 3; step++ {
		sn := snap("a", "t1", step)
		rev = save(t, s, sn, rev)
		revs, snaps = append(revs, rev), append(snaps, sn)
	}
	save(t, s, snap("a", "t2", 9), 0) // another task's history stays apart

	all, err := s.History(ctx, "a", "t1", 10)
	if err != nil {
		t.Fatalf("History(10): %v", err)
	}
	if len(all) != 3 {
		t.Fatalf("History(10) returned %d snapshots, want 3", len(all))
	}
	for i, got := range all { // newest first
		same(t, got, snaps[2-i], revs[2-i])
	}
	two, err := s.History(ctx, "a", "t1", 2)
	if err != nil {
		t.Fatalf("History(2): %v", err)
	}
	if len(two) != 2 {
		t.Fatalf("History(2) returned %d snapshots", len(two))
	}
	same(t, two[0], snaps[2], revs[2])
	same(t, two[1], snaps[1], revs[1])
	for _, n := range []int{0, -1} {
		_, err = s.History(ctx, "a", "t1", n)
		wantErr(t, fmt.Sprintf("History(%d)", n), err, snapshot.ErrInvalid)
	}
}

func testDelete(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	rev1 := save(t, s, snap("a", "t1", 1), 0)
	rev2 := save(t, s, snap("a", "t1", 2), rev1)
	keep := save(t, s, snap("a", "t2", 1), 0)
	if err := s.Delete(ctx, "a", "t1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Load(ctx, "a", "t1")
	wantErr(t, "Load after Delete", err, snapshot.ErrNotFound)
	_, err = s.History(ctx, "a", "t1", 10)
	wantErr(t, "History after Delete", err, snapshot.ErrNotFound)
	list, err := s.List(ctx, "a")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 1 || list[0].TaskID != "t2" {
		t.Fatalf("List after Delete: %d snapshots, want only t2", len(list))
	}
	same(t, load(t, s, "a", "t2"), snap("a", "t2", 1), keep)

	// A replica still holding the old revision loses.
	_, err = s.Save(ctx, snap("a", "t1", 3), rev2)
	wantErr(t, "Save with a revision from before Delete", err, snapshot.ErrConflict)

	// The task starts over, with a larger revision and a fresh history.
	again := snap("a", "t1", 1)
	rev3 := save(t, s, again, 0)
	if rev3 <= rev2 {
		t.Fatalf("revision after Delete and Save %d, not above %d", rev3, rev2)
	}
	same(t, load(t, s, "a", "t1"), again, rev3)
	hist, err := s.History(ctx, "a", "t1", 10)
	if err != nil || len(hist) != 1 {
		t.Fatalf("History after Delete and Save: %d snapshots, %v; want 1", len(hist), err)
	}
	same(t, hist[0], again, rev3)
}

func testDeleteMissing(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	if err := s.Delete(ctx, "a", "never"); err != nil {
		t.Fatalf("Delete of a missing task: %v", err)
	}
	rev := save(t, s, snap("a", "t1", 1), 0)
	for i := range 2 {
		if err := s.Delete(ctx, "a", "t1"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if rev2 := save(t, s, snap("a", "t1", 1), 0); rev2 <= rev {
		t.Fatalf("revision after two deletes %d, not above %d", rev2, rev)
	}
}

func testList(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	// Agents whose names share a prefix, and keys that share one.
	want := map[string]uint64{}
	for _, id := range []string{"t2", "t1", "t10"} {
		want[id] = save(t, s, snap("a", id, 1), 0)
	}
	want["t1"] = save(t, s, snap("a", "t1", 2), want["t1"])
	save(t, s, snap("ab", "t1", 7), 0)
	save(t, s, snap("ab", "x", 7), 0)
	save(t, s, snap("A", "t1", 7), 0)
	save(t, s, snap("b-a", "t1", 7), 0)

	list, err := s.List(ctx, "a")
	if err != nil {
		t.Fatalf("List(a): %v", err)
	}
	var ids []string
	for _, got := range list {
		ids = append(ids, got.TaskID)
		step := 1
		if got.TaskID == "t1" {
			step = 2
		}
		same(t, got, snap("a", got.TaskID, step), want[got.TaskID])
	}
	if strings.Join(ids, ",") != "t1,t10,t2" {
		t.Fatalf("List(a) = %v, want [t1 t10 t2] (ordered by task id, no other agent's)", ids)
	}
	list, err = s.List(ctx, "ab")
	if err != nil || len(list) != 2 {
		t.Fatalf("List(ab) = %d snapshots, %v; want 2", len(list), err)
	}
	list, err = s.List(ctx, "nobody")
	if err != nil || len(list) != 0 {
		t.Fatalf("List(nobody) = %d snapshots, %v; want none, no error", len(list), err)
	}
}

// next returns the next event on ch, failing t if none comes in time.
func next(t *testing.T, ch <-chan snapshot.Event) snapshot.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed early")
		}
		return ev
	case <-time.After(waitFor):
		t.Fatal("no watch event")
	}
	return snapshot.Event{}
}

func closed(t *testing.T, ch <-chan snapshot.Event) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after its ctx ended")
		}
	}
}

func testWatch(t *testing.T, s snapshot.Store) {
	ctx, cancel := context.WithCancel(context30s(t))
	defer cancel()
	save(t, s, snap("a", "before", 1), 0) // before the call: not seen
	ch, err := s.Watch(ctx, "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	// Other agents' changes come first: if they leaked, they would be
	// the first events.
	orev := save(t, s, snap("ab", "t1", 1), 0)
	save(t, s, snap("A", "t1", 1), 0)
	if err := s.Delete(ctx, "ab", "t1"); err != nil {
		t.Fatal(err)
	}
	_, _ = s.Save(ctx, snap("ab", "t1", 2), orev) // conflict: nothing to see

	first := snap("a", "t1", 1)
	rev := save(t, s, first, 0)
	ev := next(t, ch)
	if ev.Agent != "a" || ev.TaskID != "t1" {
		t.Fatalf("first event for %s/%q, want a/t1", ev.Agent, ev.TaskID)
	}
	same(t, ev.Snapshot, first, rev)

	if _, err := s.Save(ctx, snap("a", "t1", 5), 0); !errors.Is(err, snapshot.ErrConflict) {
		t.Fatalf("conflicting save: %v", err)
	}
	second := snap("a", "t1", 2)
	rev = save(t, s, second, rev)
	ev = next(t, ch)
	same(t, ev.Snapshot, second, rev) // the failed save made no event

	if err := s.Delete(ctx, "a", "t1"); err != nil {
		t.Fatal(err)
	}
	ev = next(t, ch)
	if ev.Agent != "a" || ev.TaskID != "t1" || ev.Snapshot != nil {
		t.Fatalf("delete event %s/%q with snapshot %v, want a/t1 nil", ev.Agent, ev.TaskID, ev.Snapshot)
	}
	cancel()
	closed(t, ch)
}

func testWatchCloses(t *testing.T, s snapshot.Store) {
	ctx, cancel := context.WithCancel(context30s(t))
	ch, err := s.Watch(ctx, "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	cancel()
	closed(t, ch)
	// A slow reader does not keep the watcher alive either.
	ctx, cancel = context.WithCancel(context30s(t))
	ch, err = s.Watch(ctx, "a")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var rev uint64
	for step := 1; step <= 20; step++ {
		rev = save(t, s, snap("a", "t1", step), rev)
	}
	next(t, ch)
	cancel()
	closed(t, ch)

	done, stop := context.WithCancel(context30s(t))
	stop()
	if _, err := s.Watch(done, "a"); err == nil {
		t.Fatal("Watch with an ended ctx: no error")
	}
}

// oddTaskIDs are ids that are not plain tokens (or are, but look like
// encoded ones), and the length limits: every one must round-trip.
var oddTaskIDs = []string{
	"with.dots", "a.b.c", ".", "..", "with space", " ", "slash/es", "back\\slash",
	"ünïcödé", "日本語", "emoji-🙂", "=starts-with-equals", "=", "==", "=YWJj", "abc",
	"*", ">", "a.*", "a.>", "$JS.API", "tab\there", "new\nline", "nul\x00byte",
	"\xff\xfe invalid utf-8", "-", "_", "%2F", "+", "~",
	strings.Repeat("x", 256), strings.Repeat("y", 257), strings.Repeat("é", 512),
	strings.Repeat("z", 1024), strings.Repeat(".", 1024),
}

func testOddTaskIDs(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	revs := map[string]uint64{}
	for _, id := range oddTaskIDs {
		sn := snap("a", id, 1)
		revs[id] = save(t, s, sn, 0)
		same(t, load(t, s, "a", id), sn, revs[id])
	}
	list, err := s.List(ctx, "a")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != len(oddTaskIDs) {
		t.Fatalf("List: %d snapshots, want %d", len(list), len(oddTaskIDs))
	}
	for i, got := range list {
		if i > 0 && list[i-1].TaskID >= got.TaskID {
			t.Fatalf("List not ordered by task id: %q before %q", list[i-1].TaskID, got.TaskID)
		}
		rev, ok := revs[got.TaskID]
		if !ok {
			t.Fatalf("List returned unknown task id %q", got.TaskID)
		}
		same(t, got, snap("a", got.TaskID, 1), rev)
	}
	for _, id := range oddTaskIDs[:4] {
		if err := s.Delete(ctx, "a", id); err != nil {
			t.Fatalf("Delete(%q): %v", id, err)
		}
		if _, err := s.Load(ctx, "a", id); !errors.Is(err, snapshot.ErrNotFound) {
			t.Fatalf("Load(%q) after Delete: %v", id, err)
		}
	}
}

func testInvalid(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	valid := snap("a", "t1", 1)
	mutate := func(f func(*snapshot.Snapshot)) *snapshot.Snapshot {
		c := *valid
		f(&c)
		return &c
	}
	cases := map[string]*snapshot.Snapshot{
		"nil":               nil,
		"empty agent":       mutate(func(s *snapshot.Snapshot) { s.Agent = "" }),
		"agent with dot":    mutate(func(s *snapshot.Snapshot) { s.Agent = "a.b" }),
		"agent with space":  mutate(func(s *snapshot.Snapshot) { s.Agent = "a b" }),
		"agent wildcard":    mutate(func(s *snapshot.Snapshot) { s.Agent = "*" }),
		"agent gt":          mutate(func(s *snapshot.Snapshot) { s.Agent = ">" }),
		"agent too long":    mutate(func(s *snapshot.Snapshot) { s.Agent = strings.Repeat("a", 257) }),
		"empty task id":     mutate(func(s *snapshot.Snapshot) { s.TaskID = "" }),
		"task id too long":  mutate(func(s *snapshot.Snapshot) { s.TaskID = strings.Repeat("z", 1025) }),
		"empty status":      mutate(func(s *snapshot.Snapshot) { s.Status = "" }),
		"unknown status":    mutate(func(s *snapshot.Snapshot) { s.Status = "done" }),
		"negative step":     mutate(func(s *snapshot.Snapshot) { s.Step = -1 }),
		"negative running":  mutate(func(s *snapshot.Snapshot) { s.Running = -1 }),
		"status wrong case": mutate(func(s *snapshot.Snapshot) { s.Status = "Working" }),
	}
	for name, sn := range cases {
		for _, expected := range []uint64{0, 1} {
			_, err := s.Save(ctx, sn, expected)
			wantErr(t, fmt.Sprintf("Save(%s, %d)", name, expected), err, snapshot.ErrInvalid)
		}
	}
	for _, k := range [][2]string{{"", "t"}, {"a.b", "t"}, {"a", ""}, {"*", "t"}, {"a", strings.Repeat("z", 1025)}} {
		what := fmt.Sprintf("(%q, %.10q)", k[0], k[1])
		_, err := s.Load(ctx, k[0], k[1])
		wantErr(t, "Load"+what, err, snapshot.ErrInvalid)
		_, err = s.History(ctx, k[0], k[1], 1)
		wantErr(t, "History"+what, err, snapshot.ErrInvalid)
		wantErr(t, "Delete"+what, s.Delete(ctx, k[0], k[1]), snapshot.ErrInvalid)
	}
	for _, agent := range []string{"", "a.b", "*", ">", "a b"} {
		_, err := s.List(ctx, agent)
		wantErr(t, fmt.Sprintf("List(%q)", agent), err, snapshot.ErrInvalid)
		_, err = s.Watch(ctx, agent)
		wantErr(t, fmt.Sprintf("Watch(%q)", agent), err, snapshot.ErrInvalid)
	}
	// Nothing was written by the failed calls.
	if list, err := s.List(ctx, "a"); err != nil || len(list) != 0 {
		t.Fatalf("List after invalid saves: %d snapshots, %v", len(list), err)
	}
}

const racers = 8

// testRacersRounds lines racers up each round: all load the same
// revision, then all save on it at once. Exactly one must win.
func testRacersRounds(t *testing.T, s snapshot.Store) {
	const rounds = 25
	ctx := context30s(t)
	save(t, s, snap("a", "race", 0), 0)
	wins := make([]int, racers)
	for round := range rounds {
		var loaded, done sync.WaitGroup
		start := make(chan struct{})
		won := make([]bool, racers)
		errs := make([]error, racers)
		for r := range racers {
			loaded.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				cur, err := s.Load(ctx, "a", "race")
				loaded.Done()
				if err != nil {
					errs[r] = err
					return
				}
				<-start
				nextSnap := snap("a", "race", cur.Step+1)
				nextSnap.Owner = fmt.Sprintf("racer-%d", r)
				_, err = s.Save(ctx, nextSnap, cur.Revision)
				switch {
				case err == nil:
					won[r] = true
				case !errors.Is(err, snapshot.ErrConflict):
					errs[r] = err
				}
			}()
		}
		loaded.Wait()
		close(start)
		done.Wait()
		winners := 0
		for r := range racers {
			if errs[r] != nil {
				t.Fatalf("round %d racer %d: %v", round, r, errs[r])
			}
			if won[r] {
				winners++
				wins[r]++
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d racers won, want exactly 1", round, winners)
		}
	}
	got := load(t, s, "a", "race")
	if got.Step != rounds {
		t.Fatalf("step %d after %d rounds: an update was lost or doubled", got.Step, rounds)
	}
	t.Logf("wins per racer: %v", wins)
}

// testRacersFree lets racers load and save as fast as they can: every
// successful save must be counted once in the final step.
func testRacersFree(t *testing.T, s snapshot.Store) {
	const target = 200
	ctx := context30s(t)
	save(t, s, snap("a", "race", 0), 0)
	var wins, conflicts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, racers)
	for r := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wins.Load() < target {
				cur, err := s.Load(ctx, "a", "race")
				if err != nil {
					errs <- err
					return
				}
				nextSnap := snap("a", "race", cur.Step+1)
				nextSnap.Owner = fmt.Sprintf("racer-%d", r)
				if _, err := s.Save(ctx, nextSnap, cur.Revision); err == nil {
					wins.Add(1)
				} else if errors.Is(err, snapshot.ErrConflict) {
					conflicts.Add(1)
				} else {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := load(t, s, "a", "race")
	if int64(got.Step) != wins.Load() {
		t.Fatalf("final step %d, but %d saves succeeded: lost update", got.Step, wins.Load())
	}
	t.Logf("%d saves, %d conflicts", wins.Load(), conflicts.Load())
}

func testNoAliasing(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	sn := snap("a", "t1", 1)
	sn.State = []byte("original")
	rev := save(t, s, sn, 0)
	copy(sn.State, "MUTATED!")
	got := load(t, s, "a", "t1")
	if string(got.State) != "original" {
		t.Fatalf("state after mutating the saved slice: %q", got.State)
	}
	if sn.Revision != 0 {
		t.Fatalf("Save set the argument's revision to %d", sn.Revision)
	}
	copy(got.State, "MUTATED!")
	got.Step = 99
	if again := load(t, s, "a", "t1"); string(again.State) != "original" || again.Step != 1 || again.Revision != rev {
		t.Fatalf("state after mutating a loaded snapshot: %q step %d", again.State, again.Step)
	}
	hist, err := s.History(ctx, "a", "t1", 1)
	if err != nil {
		t.Fatal(err)
	}
	copy(hist[0].State, "MUTATED!")
	list, err := s.List(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	copy(list[0].State, "MUTATED!")
	if again := load(t, s, "a", "t1"); string(again.State) != "original" {
		t.Fatalf("state after mutating History and List results: %q", again.State)
	}

	// Watchers get their own copies too.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch1, err := s.Watch(wctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	ch2, err := s.Watch(wctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	sn2 := snap("a", "t1", 2)
	sn2.State = []byte("second")
	rev = save(t, s, sn2, rev)
	copy(sn2.State, "MUTATE")
	ev1 := next(t, ch1)
	copy(ev1.Snapshot.State, "MUTATE")
	if ev2 := next(t, ch2); string(ev2.Snapshot.State) != "second" {
		t.Fatalf("second watcher saw state %q", ev2.Snapshot.State)
	}
	if again := load(t, s, "a", "t1"); string(again.State) != "second" || again.Revision != rev {
		t.Fatalf("state after mutating a watched snapshot: %q", again.State)
	}
	cancel()
	closed(t, ch1)
	closed(t, ch2)
}

// testTTL: a snapshot created with a TTL disappears by itself after it
// (unless saved again first); a TTL is refused under a second and on an
// update; reads never report one.
func testTTL(t *testing.T, s snapshot.Store) {
	ctx := context30s(t)
	marker := snap("a", "ttl", 0)
	marker.Status, marker.TTL = snapshot.Cancelled, time.Second
	rev := save(t, s, marker, 0)
	renewed := snap("a", "renewed", 0)
	renewed.TTL = time.Second
	renewedRev := save(t, s, renewed, 0)
	renewedRev = save(t, s, snap("a", "renewed", 1), renewedRev)
	keep := save(t, s, snap("a", "keep", 1), 0)
	if got := load(t, s, "a", "ttl"); got.TTL != 0 || got.Status != snapshot.Cancelled || got.Revision != rev {
		t.Fatalf("Load of a snapshot saved with a TTL: TTL %v, status %s, revision %d (want 0, cancelled, %d)", got.TTL, got.Status, got.Revision, rev)
	}
	short := snap("a", "short", 0)
	short.TTL = time.Millisecond
	_, err := s.Save(ctx, short, 0)
	wantErr(t, "Save with a TTL under a second", err, snapshot.ErrInvalid)
	update := snap("a", "ttl", 1)
	update.TTL = time.Second
	_, err = s.Save(ctx, update, rev)
	wantErr(t, "Save with a TTL on an update", err, snapshot.ErrInvalid)

	deadline := time.Now().Add(waitFor)
	for {
		_, err := s.Load(ctx, "a", "ttl")
		if errors.Is(err, snapshot.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatalf("Load while waiting for the TTL: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the snapshot saved with a TTL of 1s is still there after %v", waitFor)
		}
		time.Sleep(50 * time.Millisecond) // polling the store's clock, not synchronising goroutines
	}
	same(t, load(t, s, "a", "keep"), snap("a", "keep", 1), keep)
	same(t, load(t, s, "a", "renewed"), snap("a", "renewed", 1), renewedRev)
	// Gone for good: the task can start over.
	if again := save(t, s, snap("a", "ttl", 1), 0); again <= rev {
		t.Fatalf("revision after the TTL %d, not above %d", again, rev)
	}
}
