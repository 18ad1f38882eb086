package authz

import (
	"sync"
	"sync/atomic"
	"time"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
)

// A Server's rate limit is enforced with GCRA (the generic cell rate
// algorithm), as Linkerd's local rate limits are: each limit keeps one
// theoretical arrival time; a request is allowed if, after it, that time is
// at most one second ahead of now — a client may burst one second's worth
// of requests, then gets one every 1/rate. No lock: a compare-and-swap.

// burst is how far ahead of now a limit's arrival time may run.
const burst = time.Second

// gcra is one limit.
type gcra struct {
	interval int64        // nanoseconds per request
	tat      atomic.Int64 // theoretical arrival time, Unix nanoseconds
}

func newGCRA(perSecond uint32) *gcra { return &gcra{interval: int64(time.Second) / int64(perSecond)} }

// take admits a request at now or says how long until one would be.
func (g *gcra) take(now int64) (bool, time.Duration) {
	for {
		tat := g.tat.Load()
		next := max(tat, now) + g.interval
		if ahead := next - now; ahead > int64(burst) {
			return false, time.Duration(ahead - int64(burst))
		}
		if g.tat.CompareAndSwap(tat, next) {
			return true, 0
		}
	}
}

// rateLimit is a Server's limits: in total, per client identity (those
// without one share a limit), and overridden for some identities.
type rateLimit struct {
	name      string
	total     *gcra // nil: none
	perClient uint32
	overrides map[string]uint32
	clients   sync.Map // identity -> *gcra
}

func compileRateLimit(rl *policyv1.RateLimit) *rateLimit {
	if rl == nil {
		return nil
	}
	r := &rateLimit{name: rl.GetName(), perClient: rl.GetIdentity(), overrides: map[string]uint32{}}
	if rl.GetTotal() > 0 {
		r.total = newGCRA(rl.GetTotal())
	}
	for _, o := range rl.GetOverrides() {
		for _, id := range o.GetIdentities() {
			r.overrides[id] = o.GetRequestsPerSecond()
		}
	}
	return r
}

// take admits a request of client id now, or says which limit refused it
// ("identity", "override", "total") and when to retry.
func (r *rateLimit) take(id string, now time.Time) (scope string, retry time.Duration) {
	ns := now.UnixNano()
	rate, scope := r.perClient, "identity"
	if o, ok := r.overrides[id]; ok {
		rate, scope = o, "override"
	}
	if rate > 0 {
		g, ok := r.clients.Load(id)
		if !ok {
			g, _ = r.clients.LoadOrStore(id, newGCRA(rate))
		}
		if ok, retry := g.(*gcra).take(ns); !ok {
			return scope, retry
		}
	}
	if r.total != nil {
		if ok, retry := r.total.take(ns); !ok {
			return "total", retry
		}
	}
	return "", 0
}
