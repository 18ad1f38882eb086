package metrics

import "sync/atomic"

// RouteLabels identify one route of one outbound service: the authority
// the application addressed and the HTTPRoute or GRPCRoute that matched
// ("" for the service's default route).
type RouteLabels struct {
	Authority string // host:port
	// Service is the service's rendered labels (RenderDst).
	Service   string
	RouteName string
	RouteKind string
}

func (l RouteLabels) render() string {
	name := l.RouteName
	if name == "" {
		name = "default"
	}
	kind := ""
	if l.RouteKind != "" {
		kind = kv("route_kind", l.RouteKind)
	}
	return join(kv("direction", "outbound"), kv("dst", l.Authority), l.Service, kv("route_name", name), kind)
}

// Route holds a route's series as the application saw them — one request
// and one response however many attempts it took — and what it took:
// retries (and hedges) sent, and requests the route's timeouts ended.
type Route struct {
	HTTP
	retries  atomic.Uint64
	timeouts atomic.Uint64
}

// Retry counts an extra attempt (a retry or a hedge); on a nil Route
// (HTTP metrics off) it counts nothing.
func (r *Route) Retry() {
	if r != nil {
		r.retries.Add(1)
	}
}

// Timeout counts a request or attempt ended by the route's timeouts; on a
// nil Route it counts nothing.
func (r *Route) Timeout() {
	if r != nil {
		r.timeouts.Add(1)
	}
}
