package ratelimit

import (
	"testing"
	"time"
)

// GCRA admits one second's worth of requests at once, then one per
// interval; it says when the next would be admitted.
func TestGCRA(t *testing.T) {
	g := New(20)
	now := int64(1e12)
	for i := range 20 {
		if ok, _ := g.Take(now); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, retry := g.Take(now)
	if ok || retry <= 0 || retry > 50*time.Millisecond {
		t.Fatalf("21st request: ok %v, retry %v; want refused, retry within 50ms", ok, retry)
	}
	if ok, _ := g.Take(now + int64(50*time.Millisecond)); !ok {
		t.Fatal("refused after one interval")
	}
}
