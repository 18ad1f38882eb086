package authz

import (
	"sync"
	"time"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/ratelimit"
)

// rateLimit is a Server's limits: in total, per client identity (those
// without one share a limit), and overridden for some identities.
type rateLimit struct {
	name      string
	total     *ratelimit.GCRA // nil: none
	perClient uint32
	overrides map[string]uint32
	clients   sync.Map // identity -> *ratelimit.GCRA
}

func compileRateLimit(rl *policyv1.RateLimit) *rateLimit {
	if rl == nil {
		return nil
	}
	r := &rateLimit{name: rl.GetName(), perClient: rl.GetIdentity(), overrides: map[string]uint32{}}
	if rl.GetTotal() > 0 {
		r.total = ratelimit.New(rl.GetTotal())
	}
	for _, o := range rl.GetOverrides() {
		for _, id := range o.GetIdentities() {
			r.overrides[id] = o.GetRequestsPerSecond()
		}
	}
	return r
}

// take admits a request of client id at ns (ratelimit.Now), or says which limit refused it
// ("identity", "override", "total") and when to retry.
func (r *rateLimit) take(id string, ns int64) (scope string, retry time.Duration) {
	rate, scope := r.perClient, "identity"
	if o, ok := r.overrides[id]; ok {
		rate, scope = o, "override"
	}
	if rate > 0 {
		g, ok := r.clients.Load(id)
		if !ok {
			g, _ = r.clients.LoadOrStore(id, ratelimit.New(rate))
		}
		if ok, retry := g.(*ratelimit.GCRA).Take(ns); !ok {
			return scope, retry
		}
	}
	if r.total != nil {
		if ok, retry := r.total.Take(ns); !ok {
			return "total", retry
		}
	}
	return "", 0
}
