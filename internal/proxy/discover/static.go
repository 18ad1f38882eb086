package discover

import (
	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// Static is a service with a fixed profile and fixed plaintext endpoints,
// answered at once: what the stages that route and balance requests see of
// a discovered service, for testing them without a control plane.
func Static(authority string, p *destinationv1.Profile, cfg balance.Config, addrs ...string) *Service {
	s := &Service{authority: authority, ready: make(chan struct{}), profiled: make(chan struct{}), bal: balance.New(cfg), mesh: true}
	s.routes.Store(route.Compile(p, cfg.Now))
	s.setLimit(p.GetRateLimit(), "")
	s.opaque.Store(p.GetOpaque())
	set := &Set{Exists: true, Endpoints: make([]*Endpoint, 0, len(addrs))}
	for _, a := range addrs {
		set.Endpoints = append(set.Endpoints, &Endpoint{Addr: a, Endpoint: s.bal.NewEndpoint()})
	}
	s.set.Store(set)
	s.readyOnce.Do(func() { close(s.ready) })
	s.profiledOnce.Do(func() { close(s.profiled) })
	return s
}
