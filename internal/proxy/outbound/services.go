package outbound

import (
	"context"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
)

// services finds the service a request or a connection is addressed to:
// the control plane's discovery (*discover.Resolver), or a fixed set in a
// test of the route and balance stages.
type services interface {
	// Resolve returns the service at authority (host:port), or nil when
	// discovery knows none there.
	Resolve(ctx context.Context, authority string) *discover.Service
}
