package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// ApplyAll writes a batch whole or not at all: an object failing inside
// the transaction (a conflict, an object too large) or a caller giving up
// leaves nothing of the batch written and no event sent.
func TestApplyAllIsAllOrNothing(t *testing.T) {
	db := openTest(t, "", Options{})
	ctx := context.Background()
	old := mustApply(t, db, widget("ns", "w0", 1, nil))
	events, err := db.Watch(ctx, "", db.ResourceVersion())
	if err != nil {
		t.Fatal(err)
	}
	batch := func(last Resource) []Resource {
		rs := []Resource{widget("ns", "w1", 2, nil), widget("ns", "w2", 3, nil)}
		return append(rs, last)
	}
	stale := widget("ns", "w0", 5, nil)
	stale.Metadata.ResourceVersion = "999"
	huge := Resource{APIVersion: "v1", Kind: "Cluster", Metadata: Metadata{Name: "huge"},
		Spec: json.RawMessage(`{"blob":"` + strings.Repeat("x", MaxObjectBytes) + `"}`)}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		batch []Resource
		index int
		want  error
	}{
		{"a conflict in the last object", ctx, batch(stale), 2, ErrConflict},
		{"an object too large", ctx, batch(huge), 2, ErrTooLarge},
		{"a cancelled caller", cancelled, batch(widget("ns", "w3", 1, nil)), -1, context.Canceled},
	} {
		_, err := db.ApplyAll(tc.ctx, tc.batch)
		var ie *ItemError
		if !errors.Is(err, tc.want) || (tc.index >= 0) != errors.As(err, &ie) || (ie != nil && ie.Index != tc.index) {
			t.Errorf("%s: %v, want %v at object %d", tc.name, err, tc.want, tc.index)
		}
		if items, _, _ := db.List(ctx, "", "", nil); len(items) != 1 {
			t.Errorf("%s: %d objects stored, want only the one before the batch", tc.name, len(items))
		}
	}
	if cur, _ := db.Get(ctx, old.Key()); cur.Metadata.ResourceVersion != old.Metadata.ResourceVersion {
		t.Error("a failed batch changed an object")
	}
	select {
	case ev := <-events:
		t.Fatalf("a failed batch sent an event: %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}

	out, err := db.ApplyAll(ctx, batch(widget("ns", "w0", 7, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"w1", "w2", "w0"} {
		if out[i].Metadata.Name != name || out[i].Metadata.ResourceVersion == "" {
			t.Errorf("result %d: %+v", i, out[i].Metadata)
		}
		if ev := <-events; ev.Object.Metadata.Name != name {
			t.Errorf("event %d is for %s, want %s", i, ev.Object.Metadata.Name, name)
		}
	}
}
