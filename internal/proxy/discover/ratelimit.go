package discover

import (
	"slices"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/ratelimit"
)

// ClientLimit is the limit this proxy puts on its own requests to a
// service (an HTTPLocalRateLimitPolicy whose target is the Service).
type ClientLimit struct {
	// Name is the policy's namespace/name; Scope is "total", or "override"
	// when an override names this proxy's service account.
	Name, Scope string
	Rate        uint32
	*ratelimit.GCRA
}

// RateLimit is the limit on this proxy's requests to the service, or nil.
func (s *Service) RateLimit() *ClientLimit { return s.limit.Load() }

// setLimit applies a profile's limit for the caller (namespace/name of
// this proxy's service account). An unchanged limit keeps its state.
func (s *Service) setLimit(l *destinationv1.ClientRateLimit, caller string) {
	if l == nil {
		s.limit.Store(nil)
		return
	}
	next := &ClientLimit{Name: l.GetName(), Scope: "total", Rate: l.GetTotal()}
	for _, o := range l.GetOverrides() {
		if slices.Contains(o.GetServiceAccounts(), caller) {
			next.Scope, next.Rate = "override", o.GetRequestsPerSecond()
			break
		}
	}
	if next.Rate == 0 {
		s.limit.Store(nil)
		return
	}
	if cur := s.limit.Load(); cur != nil && cur.Name == next.Name && cur.Scope == next.Scope && cur.Rate == next.Rate {
		return
	}
	next.GCRA = ratelimit.New(next.Rate)
	s.limit.Store(next)
}
