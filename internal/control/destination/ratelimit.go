package destination

import (
	"cmp"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// clientLimit is an HTTPLocalRateLimitPolicy whose target is a Service:
// the limit each caller's proxy puts on its own requests to the service.
type clientLimit struct {
	service string // namespace/name; "" for a policy that targets a Server
	limit   *destinationv1.ClientRateLimit
}

// newClientLimit decodes a stored rate limit policy (validated when
// written).
func newClientLimit(r store.Resource) clientLimit {
	var s resources.HTTPLocalRateLimitPolicySpec
	if resources.Decode(r.Spec, &s) != nil || s.TargetRef.Kind != resources.KindService {
		return clientLimit{}
	}
	ns := r.Metadata.Namespace
	l := &destinationv1.ClientRateLimit{Name: ns + "/" + r.Metadata.Name}
	if s.Total != nil {
		l.Total = uint32(s.Total.RequestsPerSecond)
	}
	for _, o := range s.Overrides {
		ov := &destinationv1.ClientRateOverride{RequestsPerSecond: uint32(o.RequestsPerSecond)}
		for _, ref := range o.ClientRefs {
			ov.ServiceAccounts = append(ov.ServiceAccounts, cmp.Or(ref.Namespace, ns)+"/"+ref.Name)
		}
		l.Overrides = append(l.Overrides, ov)
	}
	return clientLimit{service: ns + "/" + s.TargetRef.Name, limit: l}
}

// clientLimitOf is the limit of the callers of service key (the store
// allows one), or nil.
func (ix *Index) clientLimitOf(key string) *destinationv1.ClientRateLimit {
	for _, l := range ix.clientLimits {
		if l.service == key {
			return l.limit
		}
	}
	return nil
}
