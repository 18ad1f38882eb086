package discover

import (
	"testing"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// A caller gets its override's rate, else the total; a profile that
// leaves the limit as it was keeps its state (the same limiter); none, or
// no rate for this caller, is no limit.
func TestSetLimit(t *testing.T) {
	l := &destinationv1.ClientRateLimit{Name: "shop/db-callers", Total: 50,
		Overrides: []*destinationv1.ClientRateOverride{{RequestsPerSecond: 2, ServiceAccounts: []string{"shop/batch"}}}}
	s := &Service{}
	s.setLimit(l, "shop/web")
	first := s.RateLimit()
	if first == nil || first.Rate != 50 || first.Scope != "total" {
		t.Fatalf("web's limit %+v, want the total of 50", first)
	}
	s.setLimit(l, "shop/web")
	if s.RateLimit() != first {
		t.Error("the same limit again replaced the limiter")
	}
	s.setLimit(l, "shop/batch")
	if got := s.RateLimit(); got == first || got.Rate != 2 || got.Scope != "override" {
		t.Errorf("batch's limit %+v, want its override of 2, a new limiter", got)
	}
	for _, none := range []*destinationv1.ClientRateLimit{nil, {Name: "shop/only-batch", Overrides: l.Overrides}} {
		s.setLimit(none, "shop/web")
		if got := s.RateLimit(); got != nil {
			t.Errorf("limit %v for web: %+v, want none", none, got)
		}
	}
}
