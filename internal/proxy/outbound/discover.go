package outbound

import (
	"context"
	"net/http"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// balanced sends each request to one endpoint of the logical service its
// target names, as discovery knows it; targets discovery does not know go
// where they were addressed.
func balanced(res *discover.Resolver) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		if res == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			svc := res.Resolve(r.Context(), httpproxy.Target(r.Context()))
			if svc == nil {
				next.ServeHTTP(w, r)
				return
			}
			ep := svc.Pick()
			if ep == nil {
				httpproxy.WriteError(w, r, http.StatusServiceUnavailable, "service has no endpoints")
				return
			}
			ep.Start()
			defer ep.End()
			next.ServeHTTP(w, r.WithContext(httpproxy.WithTarget(r.Context(), ep.Addr, ep.Identity)))
		})
	}
}

// pickTarget resolves a connection's target to one endpoint of its
// service, for opaque TCP; it returns the connection's own target and peer
// when discovery does not know it, and a release function to call once
// connected. (Connections are balanced by choice, not by how long they last.)
func pickTarget(ctx context.Context, res *discover.Resolver, m *transport.Meta) (target, peer string, release func(), ok bool) {
	if res == nil {
		return m.Target, m.PeerIdentity, func() {}, true
	}
	svc := res.Resolve(ctx, m.Target)
	if svc == nil {
		return m.Target, m.PeerIdentity, func() {}, true
	}
	ep := svc.Pick()
	if ep == nil {
		return "", "", nil, false
	}
	ep.Start()
	return ep.Addr, ep.Identity, ep.End, true
}
