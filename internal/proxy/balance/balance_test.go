package balance

import (
	"testing"
	"time"
)

func TestPickPrefersLessLoadedEndpoints(t *testing.T) {
	loads := make([]Load, 3)
	for range 50 {
		loads[0].Start()
	}
	now := time.Now()
	counts := make([]int, 3)
	for range 3000 {
		counts[Pick(3, func(i int) *Load { return &loads[i] }, now)]++
	}
	// Endpoint 0 wins only when both draws are 0, which two distinct draws never are.
	if counts[0] != 0 {
		t.Errorf("the busy endpoint was picked %d times: %v", counts[0], counts)
	}
	if counts[1] < 1000 || counts[2] < 1000 {
		t.Errorf("the idle endpoints should share the load: %v", counts)
	}
}

func TestPickLeavesOutFailedEndpointsWhileOthersAreHealthy(t *testing.T) {
	loads := make([]Load, 4)
	now := time.Now()
	loads[1].Failed(now)
	loads[3].Failed(now)
	for range 1000 {
		if i := Pick(4, func(i int) *Load { return &loads[i] }, now); i == 1 || i == 3 {
			t.Fatalf("picked failed endpoint %d", i)
		}
	}
	if !loads[1].Healthy(now.Add(FailurePenalty)) {
		t.Error("the penalty should end after FailurePenalty")
	}
	for i := range loads {
		loads[i].Failed(now)
	}
	seen := map[int]bool{}
	for range 1000 {
		seen[Pick(4, func(i int) *Load { return &loads[i] }, now)] = true
	}
	if len(seen) != 4 {
		t.Errorf("with every endpoint failed, all should still be tried: %v", seen)
	}
}

func TestPickEdgeCases(t *testing.T) {
	var l Load
	if got := Pick(0, nil, time.Now()); got != -1 {
		t.Errorf("Pick(0) = %d, want -1", got)
	}
	if got := Pick(1, func(int) *Load { return &l }, time.Now()); got != 0 {
		t.Errorf("Pick(1) = %d, want 0", got)
	}
	loads := make([]Load, 2)
	loads[0].Failed(time.Now())
	for range 100 {
		if got := Pick(2, func(i int) *Load { return &loads[i] }, time.Now()); got != 1 {
			t.Fatalf("Pick with one healthy of two = %d, want 1", got)
		}
	}
}
