package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// next receives one event or fails after a timeout.
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for an event")
	}
	return Event{}
}

// waitClosed drains ch and reports how many events it held before closing.
func waitClosed(t *testing.T, ch <-chan Event) int {
	t.Helper()
	n := 0
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return n
			}
			n++
		case <-time.After(10 * time.Second):
			t.Fatal("watch channel not closed")
		}
	}
}

func rvOf(ev Event) uint64 {
	rv, _ := strconv.ParseUint(ev.Object.Metadata.ResourceVersion, 10, 64)
	return rv
}

func TestWatchEvents(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	all, err := db.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	widgets, err := db.Watch(ctx, "Widget", 0)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, widget("ns", "w", 1, nil))
	mustApply(t, db, Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "c"}})
	mustApply(t, db, widget("ns", "w", 2, nil))
	mustApply(t, db, widget("ns", "w", 2, nil)) // no-op: no event
	if err := db.Delete(ctx, Key{"Widget", "ns", "w"}); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  EventType
		key  string
		rv   uint64
		size string
	}{
		{Added, "Widget/ns/w", 1, `{"size":1}`},
		{Added, "Cluster/c", 2, ""},
		{Modified, "Widget/ns/w", 3, `{"size":2}`},
		{Deleted, "Widget/ns/w", 4, `{"size":2}`},
	}
	for _, w := range want {
		ev := next(t, all)
		if ev.Type != w.typ || ev.Object.Key().String() != w.key || rvOf(ev) != w.rv || string(ev.Object.Spec) != w.size {
			t.Errorf("all: got %s %s rv %d spec %s, want %+v", ev.Type, ev.Object.Key(), rvOf(ev), ev.Object.Spec, w)
		}
		if w.key == "Cluster/c" {
			continue
		}
		if ev := next(t, widgets); ev.Type != w.typ || rvOf(ev) != w.rv {
			t.Errorf("widgets: got %s rv %d, want %+v", ev.Type, rvOf(ev), w)
		}
	}
	// A watch starting in the past replays history after fromRV, then continues live.
	past, err := db.Watch(ctx, "Widget", 1)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, widget("ns", "v", 1, nil))
	for _, rv := range []uint64{3, 4, 5} {
		if ev := next(t, past); rvOf(ev) != rv {
			t.Errorf("replay: rv %d, want %d", rvOf(ev), rv)
		}
	}
	if ev := next(t, all); rvOf(ev) != 5 {
		t.Errorf("live after replay: rv %d", rvOf(ev))
	}
	// Watchers get their own copies.
	ev := next(t, widgets)
	ev.Object.Spec[0] = 'X'
	if got, _ := db.Get(ctx, ev.Object.Key()); string(got.Spec) != `{"size":1}` {
		t.Errorf("mutating an event changed the store: %s", got.Spec)
	}
}

func TestWatchHistoryAndGone(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/store.db"
	db, err := Open(path, Options{Kinds: fakeKinds{}, HistorySize: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustApply(t, db, widget("ns", fmt.Sprint("w", i), 1, nil))
	}
	cases := []struct {
		from uint64
		gone bool
	}{{0, true}, {1, true}, {2, false}, {4, false}, {5, false}, {9, false}}
	for _, tc := range cases {
		ch, err := db.Watch(ctx, "", tc.from)
		if tc.gone {
			if !errors.Is(err, ErrGone) {
				t.Errorf("Watch(%d) = %v, want ErrGone", tc.from, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Watch(%d) = %v", tc.from, err)
		}
		for rv := tc.from + 1; rv <= 5; rv++ {
			if ev := next(t, ch); rvOf(ev) != rv {
				t.Errorf("Watch(%d): rv %d, want %d", tc.from, rvOf(ev), rv)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// After reopening the history is empty: only watches from the current rv work.
	db = openTest(t, path, Options{})
	if _, err := db.Watch(ctx, "", 4); !errors.Is(err, ErrGone) {
		t.Errorf("Watch(4) after reopen = %v, want ErrGone", err)
	}
	ch, err := db.Watch(ctx, "Widget", db.ResourceVersion())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, db, widget("ns", "after", 1, nil))
	if ev := next(t, ch); rvOf(ev) != 6 || ev.Type != Added {
		t.Errorf("event after reopen: %s rv %d", ev.Type, rvOf(ev))
	}
}

func TestWatchEndsWithContextAndClose(t *testing.T) {
	db := openTest(t, "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := db.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	waitClosed(t, ch)
	mustApply(t, db, widget("ns", "w", 1, nil)) // publishing after cancel must not panic

	ch, err = db.Watch(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := waitClosed(t, ch); n != 1 {
		t.Errorf("got %d buffered events before close, want 1", n)
	}
	if _, err := db.Watch(context.Background(), "", 1); err == nil {
		t.Error("Watch on closed DB succeeded")
	}
}

func TestSlowWatcherIsClosed(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{WatchBuffer: 2})
	slow, err := db.Watch(ctx, "", 0) // never read until the end
	if err != nil {
		t.Fatal(err)
	}
	fast, err := db.hub.watch(ctx, "", 0, 1000) // a big buffer, read concurrently
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	got := make(chan []uint64)
	go func() {
		var rvs []uint64
		for ev := range fast {
			if rvs = append(rvs, rvOf(ev)); len(rvs) == n {
				break
			}
		}
		got <- rvs
	}()
	for i := range n {
		start := time.Now()
		mustApply(t, db, widget("ns", fmt.Sprint("w", i), 1, nil))
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Apply %d took %v", i, d)
		}
	}
	if k := waitClosed(t, slow); k != 2 {
		t.Errorf("slow watcher held %d events before being closed, want 2", k)
	}
	var rvs []uint64
	select {
	case rvs = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("fast watcher did not get all events")
	}
	for i, rv := range rvs {
		if rv != uint64(i+1) {
			t.Fatalf("fast watcher rvs = %v", rvs)
		}
	}
	// A replay larger than the buffer closes the channel after filling it.
	if k := waitClosed(t, mustWatch(t, db, 0)); k != 2 {
		t.Errorf("oversized replay delivered %d events before closing, want 2", k)
	}
}

func mustWatch(t *testing.T, db *DB, from uint64) <-chan Event {
	t.Helper()
	ch, err := db.Watch(context.Background(), "", from)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestConcurrentApply(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	const writers, perWriter = 8, 20
	total := writers * perWriter
	var watchers []<-chan Event
	for range 3 {
		watchers = append(watchers, mustWatch(t, db, 0))
	}
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for g := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if _, err := db.Apply(ctx, widget(fmt.Sprint("ns", g), fmt.Sprint("w", i), i%10+1, nil)); err != nil {
					errs <- err
				}
				if i%5 == 0 {
					if _, _, err := db.List(ctx, "Widget", "", nil); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for wi, ch := range watchers {
		seen := map[string]bool{}
		for want := uint64(1); want <= uint64(total); want++ {
			ev := next(t, ch)
			if rvOf(ev) != want || ev.Type != Added {
				t.Fatalf("watcher %d: got %s rv %d, want ADDED rv %d", wi, ev.Type, rvOf(ev), want)
			}
			k := ev.Object.Key().String()
			if seen[k] {
				t.Fatalf("watcher %d: %s seen twice", wi, k)
			}
			seen[k] = true
		}
	}
	items, rv, err := db.List(ctx, "Widget", "", nil)
	if err != nil || len(items) != total || rv != uint64(total) {
		t.Errorf("List: %d items rv %d err %v; want %d", len(items), rv, err, total)
	}
}

func TestConcurrentOptimisticUpdates(t *testing.T) {
	ctx := context.Background()
	db := openTest(t, "", Options{})
	key := Key{Kind: "Cluster", Name: "counter"}
	mustApply(t, db, Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "counter"}, Spec: []byte(`{"n":0}`)})
	const workers, incs = 4, 10
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for done := 0; done < incs; {
				cur, err := db.Get(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				var s struct{ N int }
				_ = json.Unmarshal(cur.Spec, &s)
				cur.Spec = fmt.Appendf(nil, `{"n":%d}`, s.N+1)
				switch _, err := db.Apply(ctx, cur); {
				case err == nil:
					done++
				case !errors.Is(err, ErrConflict):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := db.Get(ctx, key)
	if err != nil || string(got.Spec) != fmt.Sprintf(`{"n":%d}`, workers*incs) || got.Metadata.Generation != workers*incs+1 {
		t.Errorf("counter = %s gen %d (%v), want n=%d", got.Spec, got.Metadata.Generation, err, workers*incs)
	}
}
