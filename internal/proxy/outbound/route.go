package outbound

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/ratelimit"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// sender is the stage after the route stage (the balance stage): it sends
// a request to an endpoint of svc, the service the route stage resolved,
// or as addressed when svc is nil (outside the mesh).
type sender interface {
	send(w http.ResponseWriter, r *http.Request, svc *discover.Service)
}

// router is the route stage: a request to a service with routes is
// matched to a rule (404 when none matches), redirected or sent to the
// rule's weighted backend with its header modifiers and faults, within
// its timeouts, hedged and retried by its policy within its budget, and
// copied to its mirror.
type router struct {
	res       services
	next      sender
	mirrors   chan struct{}
	decisions *explain.Log
	reg       *metrics.Registry
	// limited counts the requests the services' client limits refused,
	// a series per limit and service (limitedKey -> *atomic.Uint64).
	limited       *metrics.Counters
	limitedSeries sync.Map
}

// routeAndBalance is the route stage followed by the balance stage, which
// it hands each request's service as an argument; next is what follows
// the balance stage. Without discovery (res nil) there is neither.
func routeAndBalance(res services, bal *balancer, reg *metrics.Registry, decisions *explain.Log) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		if res == nil {
			return next
		}
		return newRouter(res, balanced{bal, next}, reg, decisions)
	}
}

func newRouter(res services, next sender, reg *metrics.Registry, decisions *explain.Log) *router {
	rt := &router{res: res, next: next, mirrors: make(chan struct{}, maxMirrors), decisions: decisions, reg: reg}
	if reg != nil {
		rt.limited = reg.Counters("outbound_http_local_ratelimit_total", "Total count of outbound HTTP requests a service's client rate limit refused at this proxy (429).")
	}
	return rt
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	svc := rt.res.Resolve(r.Context(), httpproxy.Target(r.Context()))
	if svc == nil {
		rt.next.send(w, r, nil)
		return
	}
	d := &explain.Decision{Time: time.Now(), Direction: "outbound", Method: explain.Clip(r.Method), Authority: explain.Clip(r.Host), Path: explain.Clip(r.URL.Path)}
	defer rt.decisions.Record(d)
	ctx := explain.With(r.Context(), d)
	var rule *route.Rule
	prefix := ""
	table := svc.Routes()
	if table != nil {
		rule, prefix = table.Match(r)
	}
	// series is the matched route's metrics, which the attempts count
	// retries and timeouts on; nil (counting nothing) without HTTP metrics.
	var series *metrics.Route
	if rt.reg != nil {
		labels := metrics.RouteLabels{Authority: r.Host} // the default route
		if set := svc.Set(); set != nil {
			labels.Service = set.MetricLabels
		}
		if rule != nil {
			labels.RouteName, labels.RouteKind = rule.Route, rule.Kind
		}
		series = rt.reg.Route(labels)
	}
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lim := svc.RateLimit(); lim != nil {
			if ok, retry := lim.Take(ratelimit.Now()); !ok {
				rt.refuse(w, r, svc, lim, retry, d)
				return
			}
		}
		switch {
		case table == nil:
			rt.next.send(w, r, svc)
		case rule == nil:
			d.Status = http.StatusNotFound
			httpproxy.WriteError(w, r, http.StatusNotFound, "no route matches the request")
		default:
			rt.serveRoute(w, r, svc, rule, prefix, series)
		}
	})
	if series == nil { // no HTTP metrics
		serve(w, r.WithContext(ctx))
		return
	}
	series.Request()
	httpproxy.Observe(serve, w, r.WithContext(ctx), func(o httpproxy.Outcome) {
		series.Response(o.Status, o.GRPCStatus, o.Failed(), o.Latency)
	})
}

// serveRoute sends r by the rule it matched: a redirect, or to the rule's
// backend after its faults and header changes.
func (rt *router) serveRoute(w http.ResponseWriter, r *http.Request, svc *discover.Service, rule *route.Rule, prefix string, series *metrics.Route) {
	ctx := r.Context()
	d := explain.From(ctx)
	d.Route, d.RouteKind, d.Rule = rule.Route, rule.Kind, rule.Name
	if rule.Redirect != nil {
		d.Status = int(rule.Redirect.StatusCode)
		redirect(w, r, rule.Redirect, prefix)
		return
	}
	backend := svc
	authority, ok := rule.Backend()
	d.Backend = authority
	switch {
	case !ok:
		httpproxy.WriteError(w, r, http.StatusInternalServerError, "the route's backends all have weight 0")
		return
	case authority != "":
		if backend = rt.res.Resolve(r.Context(), authority); backend == nil {
			httpproxy.WriteError(w, r, http.StatusServiceUnavailable, "backend "+authority+" is unknown")
			return
		}
	}
	if f := rule.Fault; f != nil {
		if delay := f.Delayed(); delay > 0 && !sleep(ctx, delay) {
			return
		}
		if f.Abort() {
			d.Status, d.FailFast = f.AbortStatus, "fault injected by the route"
			httpproxy.WriteError(w, r, f.AbortStatus, "fault injected by the route")
			return
		}
	}
	rule.RequestHeaders.Apply(r.Header)
	rt.serveRule(w, r.WithContext(httpproxy.WithRoute(ctx, rule.Route, rule.Kind)), backend, rule, series)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
