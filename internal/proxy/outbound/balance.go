package outbound

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/egress"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

const (
	// DefaultMaxPending bounds the requests waiting for an endpoint.
	DefaultMaxPending = 1000
	pollAvailable     = 20 * time.Millisecond
)

// balancer is the balance stage: it sends each request (each connection,
// for TCP) to one endpoint of the logical service its target names, and
// feeds the endpoint's latency estimate and failure accrual with how it
// went. Targets discovery does not know go where they were addressed.
type balancer struct {
	res        services      // nil without a control plane
	egress     *egress.Guard // nil: traffic leaves the mesh unchecked
	classes    balance.Classes
	failFast   time.Duration
	maxPending int64
	pending    atomic.Int64
}

// pick returns an endpoint of svc. When none is available, requests wait
// (within the queue bound) until the service has been without one for the
// fail-fast time; from then on they fail at once, until one is back.
func (b *balancer) pick(ctx context.Context, svc *discover.Service) (*discover.Endpoint, error) {
	ep, err := svc.Pick()
	if err == nil {
		available(svc, ep)
		return ep, nil
	}
	left := b.failFast - svc.Unavailable()
	if left <= 0 || explain.Why(ctx) != "" || transport.IsProbe(ctx) {
		return nil, err // failing fast; retries and detection probes never queue
	}
	if b.pending.Add(1) > b.maxPending {
		b.pending.Add(-1)
		return nil, errQueueFull
	}
	defer b.pending.Add(-1)
	if ep, err = waitEndpoint(ctx, left, err, svc.Pick); err != nil {
		return nil, err
	}
	available(svc, ep)
	return ep, nil
}

// waitEndpoint polls pick until it gives an endpoint, ctx ends (its
// error) or within passes (lastErr, or pick's latest error).
func waitEndpoint(ctx context.Context, within time.Duration, lastErr error, pick func() (*discover.Endpoint, error)) (*discover.Endpoint, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(pollAvailable)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, lastErr
		case <-tick.C:
			ep, err := pick()
			if err == nil {
				return ep, nil
			}
			lastErr = err
		}
	}
}

var errQueueFull = errors.New("too many requests waiting for an endpoint")

// available ends svc's fail-fast count when ep is a readmitted endpoint
// (a probation request does not mean the service is back).
func available(svc *discover.Service, ep *discover.Endpoint) {
	if !ep.OnProbation() {
		svc.Available()
	}
}

// balanced is the balance stage of the HTTP stack, in front of next (what
// sends a request to the endpoint it picked).
type balanced struct {
	b    *balancer
	next http.Handler
}

// send sends r to an endpoint of svc, which the route stage resolved, or,
// outside the mesh (svc nil), as addressed where egress policy allows.
func (s balanced) send(w http.ResponseWriter, r *http.Request, svc *discover.Service) {
	b, next := s.b, s.next
	if svc == nil {
		if b.egress == nil {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		target := httpproxy.Target(ctx)
		pinned, err := b.egress.Pin(ctx, target)
		if err != nil {
			httpproxy.WriteError(w, r, http.StatusBadGateway, "cannot resolve "+target+": "+err.Error())
			return
		}
		if pinned != target {
			r = r.WithContext(httpproxy.WithTarget(ctx, pinned, httpproxy.Peer(ctx), httpproxy.Dst(ctx)))
		}
		if b.egress.AllowHTTP(w, r) {
			next.ServeHTTP(w, r)
		}
		return
	}
	d := explain.From(r.Context())
	ep, err := b.pick(r.Context(), svc)
	if err != nil && r.Context().Err() != nil {
		return // the client left, or the route's timeout answers for it
	}
	if err != nil {
		reason := failFastReason(err)
		d.FailedFast(reason)
		httpproxy.WriteError(w, r, http.StatusServiceUnavailable, reason)
		return
	}
	u := newUnprocessed(r)
	for why := explain.Why(r.Context()); ; why = "unprocessed" {
		ww, req := w, r.WithContext(httpproxy.WithTarget(r.Context(), ep.Addr, ep.Identity, ep.MetricLabels))
		var uw *unprocessedWriter
		if u != nil {
			req.Body, req.ContentLength = u.attemptBody() // the copy's own body
			uw = &unprocessedWriter{w: w, header: http.Header{}, canRetry: func() bool { return u.retry(svc, ep, r) }}
			ww = uw
		}
		ep.Start()
		httpproxy.Observe(next, ww, req, func(o httpproxy.Outcome) {
			// Nothing is learnt of the endpoint when the client broke the
			// request, or from the DEADLINE_EXCEEDED of a call whose own
			// deadline ran out (the caller's budget, not the endpoint).
			outcome := balance.Abandoned
			switch {
			case o.ClientFault, o.GRPCStatus == 4 && httpproxy.CallerDeadlinePassed(r, o.Latency):
			default:
				outcome = b.classes.Classify(o.Completed, o.Status, o.GRPCStatus, r.Context().Err())
			}
			if ep.End(o.Latency, outcome) {
				d.Ejected(ep.Addr)
			}
			d.AddAttempt(explain.Attempt{Endpoint: ep.Addr, Status: o.Status, GRPC: max(o.GRPCStatus, 0), Why: why})
		})
		if uw == nil || !uw.retry {
			return
		}
		ep = u.next
	}
}

// errEgressDenied refuses a connection an EgressNetwork keeps in the mesh.
var errEgressDenied = fmt.Errorf("%w: egress denied by an EgressNetwork", tcpproxy.ErrDenied)

// Fail-fast reasons: a retry cannot help with these.
const (
	reasonUnresolved  = "service not yet resolved by the control plane"
	reasonNoService   = "no such service"
	reasonNoEndpoints = "service has no endpoints"
	reasonAllEjected  = "every endpoint of the service is failing"
	reasonQueueFull   = "service unavailable: too many requests waiting"
)

func failFastReason(err error) string {
	switch {
	case errors.Is(err, discover.ErrUnresolved):
		return reasonUnresolved
	case errors.Is(err, discover.ErrNoService):
		return reasonNoService
	case errors.Is(err, balance.ErrNoEndpoints):
		return reasonNoEndpoints
	case errors.Is(err, balance.ErrAllEjected):
		return reasonAllEjected
	case errors.Is(err, errQueueFull):
		return reasonQueueFull
	}
	return err.Error()
}

// failingFast reports whether a response is the balance stage's fail-fast answer.
func failingFast(h http.Header) bool {
	switch h.Get(httpproxy.ErrorHeader) {
	case reasonUnresolved, reasonNoService, reasonNoEndpoints, reasonAllEjected, reasonQueueFull:
		return true
	}
	return false
}

// pickTarget resolves a connection's target to one endpoint of its
// service, for opaque TCP; it returns the connection's own target and peer
// when discovery does not know it, and a release function to call with the
// dial's outcome. (Connections are balanced by choice, not by how long they
// last: a connection is not a request with a latency.)
func (b *balancer) pickTarget(ctx context.Context, m *transport.Meta) (target, peer string, release func(dialErr error), err error) {
	if b.res == nil {
		return m.Target, m.PeerIdentity, func(error) {}, nil
	}
	svc := b.res.Resolve(ctx, m.Target)
	if svc == nil { // outside the mesh
		target = m.Target
		if b.egress != nil {
			if target, err = b.egress.Pin(ctx, target); err != nil {
				return "", "", nil, err
			}
			if !b.egress.AllowConn(m, target) {
				return "", "", nil, errEgressDenied
			}
		}
		return target, m.PeerIdentity, func(error) {}, nil
	}
	ep, err := b.pick(ctx, svc)
	if err != nil {
		return "", "", nil, err
	}
	ep.Start()
	start := time.Now()
	return ep.Addr, ep.Identity, func(dialErr error) {
		o := balance.Success
		if dialErr != nil {
			o = balance.Failure
			if ctx.Err() != nil {
				o = balance.Abandoned // the caller gave up, not the endpoint
			}
		}
		ep.End(time.Since(start), o)
	}, nil
}
