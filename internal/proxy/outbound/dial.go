package outbound

import (
	"context"
	"errors"
	"net"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// upstream opens the outbound stack's connections: to a meshed endpoint
// over mTLS, else over plain TCP, telling discovery of a failed dial.
type upstream struct {
	tcp  *transport.Dialer
	mesh *mesh.Dialer       // nil without an identity: nothing is meshed
	res  *discover.Resolver // nil without a control plane
	bal  *balancer
}

// meshDial dials target over mTLS, verifying it as peer; a failure the
// caller did not cause counts against the endpoint.
func (u *upstream) meshDial(ctx context.Context, target, peer string, proto mesh.Protocol) (net.Conn, error) {
	id, err := identity.Parse(peer)
	if err != nil {
		return nil, err
	}
	c, err := u.mesh.Dial(ctx, transport.Outbound, target, id, proto)
	if endpointFault(err) != nil && u.res != nil && ctx.Err() == nil {
		u.res.Failed(target) // not when the caller gave up
	}
	return c, err
}

// endpointFault is a dial's error unless the peer proxy answered and
// refused the connection (its policy, its application): that says nothing
// of the endpoint's health.
func endpointFault(err error) error {
	if errors.Is(err, mesh.ErrPeerRefused) {
		return nil
	}
	return err
}

// connect is how opaque traffic (and protocol detection's server-first
// probe) reaches its destination: an endpoint the balancer picks for the
// connection, dialled over mTLS when it is meshed.
func (u *upstream) connect(ctx context.Context, m *transport.Meta) (net.Conn, error) {
	target, peer, release, err := u.bal.pickTarget(ctx, m)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	if peer != "" && u.mesh != nil {
		c, err = u.meshDial(ctx, target, peer, mesh.Opaque)
	} else {
		c, err = u.tcp.DialContext(ctx, m.Direction, target)
	}
	release(endpointFault(err))
	return c, err
}
