package outbound

import (
	"context"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// serveRule sends r to backend within the rule's timeouts, hedging and
// retrying as its policy and budget allow, counting retries and timeouts
// on series.
func (rt *router) serveRule(w http.ResponseWriter, r *http.Request, backend *discover.Service, rule *route.Rule, series *metrics.Route) {
	ctx := r.Context()
	if rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.RequestTimeout)
		defer cancel()
	}
	if t, ok := httpproxy.GRPCTimeout(r.Header); ok {
		// The call's own deadline: no attempt outlives it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	policy := rule.Retry.FromRequest(r.Header)
	retries := 0
	if policy != nil {
		retries = policy.Attempts
	}
	body := newReplay(r, retries > 0 || rule.Hedge != nil || rule.Mirror != nil)
	budget := rule.HedgeBudget
	if policy != nil && policy.Budget != nil {
		budget = policy.Budget
	}
	if budget != nil {
		budget.Deposit()
	}
	if body.whole && rule.Mirrored() {
		rt.mirror(r, rule, body.bytes())
	}
	perTry := rule.BackendTimeout
	if policy != nil && policy.PerTry > 0 {
		perTry = policy.PerTry
	}
	withdraw := func() bool { return budget == nil || budget.Withdraw() }
	start := time.Now()
	for n := 0; ; n++ {
		a := &attempt{rt: rt, svc: backend, w: w, r: r, ctx: ctx, body: body, perTry: perTry, modify: rule.ResponseHeaders, series: series}
		if n < retries {
			a.decide = func(status, grpc int, h http.Header) bool {
				return ctx.Err() == nil && body.replayable() && !failingFast(h) && policy.Retryable(status, grpc) && withdraw()
			}
		}
		var hedge time.Duration
		if rule.Hedge != nil && n == 0 && body.whole {
			hedge = rule.Hedge.Delay()
		}
		retry := a.run(n > 0, hedge, withdraw)
		if rule.Hedge != nil && !retry {
			rule.Hedge.Observe(time.Since(start))
		}
		if !retry {
			return
		}
		if policy.Backoff > 0 && !sleep(ctx, policy.Backoff) {
			if r.Context().Err() == nil { // the route's deadline, not the client, ended it
				series.Timeout()
				httpproxy.WriteError(w, r, http.StatusGatewayTimeout, "request timed out (route timeout)")
			}
			return
		}
	}
}
