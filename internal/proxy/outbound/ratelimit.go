package outbound

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
)

// A service's client limit (an HTTPLocalRateLimitPolicy whose target is
// the Service) is enforced by the router, before a route or an endpoint
// is chosen: a caller over it is throttled at its own proxy.

// limitedKey is a series of outbound_http_local_ratelimit_total.
type limitedKey struct{ name, scope, service, namespace string }

// refuse answers a request the service's client limit refused: 429 (gRPC
// RESOURCE_EXHAUSTED) with Retry-After, counted and explained; no
// endpoint is tried, so none is blamed.
func (rt *router) refuse(w http.ResponseWriter, r *http.Request, svc *discover.Service, lim *discover.ClientLimit, retry time.Duration, d *explain.Decision) {
	by := lim.Name + " (" + lim.Scope + " limit of each caller)"
	d.Status = http.StatusTooManyRequests
	d.FailedFast(httpproxy.ReasonRateLimited + " by " + by)
	if rt.limited != nil {
		k := limitedKey{name: lim.Name, scope: lim.Scope}
		if set := svc.Set(); set != nil {
			k.service, k.namespace = set.Labels["dst_service"], set.Labels["dst_namespace"]
		}
		c, ok := rt.limitedSeries.Load(k)
		if !ok {
			c, _ = rt.limitedSeries.LoadOrStore(k, rt.limited.With("ratelimit_name", k.name, "ratelimit_scope", k.scope,
				"dst_service", k.service, "dst_namespace", k.namespace))
		}
		c.(*atomic.Uint64).Add(1)
	}
	httpproxy.WriteRateLimited(w, r, retry, by)
}
