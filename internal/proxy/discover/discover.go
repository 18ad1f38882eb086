// Package discover is the proxy's side of the destination API: it resolves
// a logical service (a name or a virtual IP, with a port) to the set of its
// endpoints and keeps that set current from a stream, one per service,
// shared by every request and dropped when the service goes unused. While
// the control plane is unreachable it keeps serving the last set it had
// and reconnects with backoff; a new stream's first message replaces the
// old set.
package discover

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// Defaults.
const (
	DefaultWait        = 3 * time.Second
	DefaultIdleTimeout = 5 * time.Minute
	backoffMin         = 100 * time.Millisecond
	backoffMax         = 5 * time.Second
)

// Endpoint is one instance of a service, with its balancing state.
type Endpoint struct {
	Addr     string // the application's IP:port
	Identity string // the SPIFFE ID of the proxy in front of it; "" if not meshed
	MeshPort uint16
	// MetricLabels is the endpoint's and its service's labels, rendered
	// for its metrics.
	MetricLabels string
	*balance.Endpoint
}

// Set is an immutable view of a service's endpoints.
type Set struct {
	// Exists is false when the control plane knows no such service.
	Exists    bool
	Endpoints []*Endpoint
	Labels    map[string]string
	// MetricLabels is Labels rendered for metrics (dst_service, dst_namespace).
	MetricLabels string
}

// Config configures a Resolver.
type Config struct {
	Client destinationv1.DestinationClient
	// Namespace qualifies short names (the proxy's own namespace).
	Namespace string
	// Caller is the proxy's service account, namespace/name: the caller
	// the limits of services (ClientLimit) name in their overrides.
	Caller string
	// Ready, if set, is waited for before the first stream opens (the
	// proxy's certificate).
	Ready <-chan struct{}
	// Wait bounds how long the first lookup of a service waits for the
	// control plane; if it gives up, later lookups do not wait at all
	// until the answer comes.
	Wait time.Duration
	// ClusterDomain, if set, makes names under svc.<ClusterDomain> mesh
	// services: never forwarded as addressed. One the control plane does
	// not know (yet), or has not answered for, is a service without
	// endpoints, which callers wait for and then fail fast on.
	ClusterDomain string
	// IdleTimeout drops a service's stream when unused this long.
	IdleTimeout time.Duration
	// Balance configures every service's balancer.
	Balance balance.Config
	Log     *slog.Logger
}

// Resolver keeps one Service per authority.
type Resolver struct {
	cfg Config

	mu       sync.RWMutex
	services map[string]*Service
	ctx      context.Context

	meshPorts sync.Map // endpoint address -> uint16
}

// NewResolver returns a resolver whose streams live until ctx ends.
func NewResolver(ctx context.Context, cfg Config) *Resolver {
	if cfg.Wait <= 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	r := &Resolver{cfg: cfg, services: map[string]*Service{}, ctx: ctx}
	go r.evictIdle()
	return r
}

// Service is one logical service being watched.
type Service struct {
	authority string
	set       atomic.Pointer[Set]
	ready     chan struct{}
	readyOnce sync.Once
	used      atomic.Int64 // unix nanoseconds
	cancel    context.CancelFunc
	// late is set once a lookup gave up waiting for the first answer:
	// later lookups pass through at once until it comes.
	late atomic.Bool
	// mesh: the authority is a mesh service name, never forwarded as addressed.
	mesh   bool
	bal    *balance.Balancer
	routes atomic.Pointer[route.Table]
	limit  atomic.Pointer[ClientLimit]
	// opaque: the port is declared opaque (no protocol detection);
	// profiled closes with the first profile.
	opaque       atomic.Bool
	profiled     chan struct{}
	profiledOnce sync.Once
	// downSince is when Pick last started failing (unix ns); 0 while it works.
	downSince atomic.Int64
}

// Unavailable reports how long the service has had no endpoint to pick,
// starting the count now if it had one until now.
func (s *Service) Unavailable() time.Duration {
	now := time.Now().UnixNano()
	if s.downSince.CompareAndSwap(0, now) {
		return 0
	}
	since := s.downSince.Load()
	if since == 0 || since > now {
		return 0
	}
	return time.Duration(now - since)
}

// Available records that an endpoint could be picked.
func (s *Service) Available() {
	if s.downSince.Load() != 0 {
		s.downSince.Store(0)
	}
}

// Routes is the service's routing table; nil when it has no routes (or
// none has arrived yet): requests go to the service itself.
func (s *Service) Routes() *route.Table { return s.routes.Load() }

// Set is the current set; nil until the first answer.
func (s *Service) Set() *Set { return s.set.Load() }

// Why a mesh service name has no endpoint to pick.
var (
	ErrUnresolved = errors.New("the control plane has not answered for the service yet")
	ErrNoService  = errors.New("the control plane knows no such service")
)

// Pick returns the endpoint for one request or connection, or
// ErrUnresolved, ErrNoService, balance.ErrNoEndpoints or
// balance.ErrAllEjected. The caller brackets its use with ep.Start and
// ep.End.
func (s *Service) Pick() (*Endpoint, error) { return s.PickOther(nil) }

// PickOther is Pick among the endpoints not in tried: for a request that
// failed on those.
func (s *Service) PickOther(tried []*Endpoint) (*Endpoint, error) {
	set := s.set.Load()
	switch {
	case set == nil:
		return nil, ErrUnresolved
	case !set.Exists:
		return nil, ErrNoService
	}
	eps := set.Endpoints
	if len(tried) > 0 {
		eps = slices.DeleteFunc(slices.Clone(eps), func(ep *Endpoint) bool { return slices.Contains(tried, ep) })
	}
	i, err := s.bal.Pick(len(eps), func(i int) *balance.Endpoint { return eps[i].Endpoint })
	if err != nil {
		return nil, err
	}
	return eps[i], nil
}

// Resolve returns the watched service for authority, waiting (within ctx
// and the configured wait) for its first answer. It returns nil when no
// answer came in time, or when the control plane knows no such service:
// the caller then forwards to the original destination. A mesh service
// name (see Config.ClusterDomain) is never given up on that way: its
// Service is returned and Pick says why it has no endpoint.
func (r *Resolver) Resolve(ctx context.Context, authority string) *Service {
	r.mu.RLock() // the request path: shared
	s, ok := r.services[authority]
	if ok {
		s.used.Store(time.Now().UnixNano()) // under the lock: eviction sees it
	}
	r.mu.RUnlock()
	if !ok {
		r.mu.Lock()
		if s, ok = r.services[authority]; !ok {
			wctx, cancel := context.WithCancel(r.ctx)
			s = &Service{authority: authority, ready: make(chan struct{}), profiled: make(chan struct{}), cancel: cancel,
				bal: balance.New(r.cfg.Balance), mesh: r.meshName(authority)}
			r.services[authority] = s
			go r.watch(wctx, s)
		}
		s.used.Store(time.Now().UnixNano())
		r.mu.Unlock()
	}
	select {
	case <-s.ready:
	default:
		if s.late.Load() {
			return s.orNil()
		}
		t := time.NewTimer(r.cfg.Wait)
		defer t.Stop()
		select {
		case <-s.ready:
		case <-t.C:
			s.late.Store(true)
			return s.orNil()
		case <-ctx.Done():
			return nil
		}
	}
	if set := s.set.Load(); set == nil || !set.Exists {
		return s.orNil()
	}
	return s
}

// Opaque reports whether target (a service's virtual IP:port or name:port,
// or an instance's address) is a port its service declares opaque: its
// connections are forwarded without protocol detection. The first lookup
// of a target waits, as Resolve does, for its profile.
func (r *Resolver) Opaque(target string) bool {
	s := r.Resolve(context.Background(), target)
	if s == nil {
		return false
	}
	select {
	case <-s.profiled:
	default:
		t := time.NewTimer(r.cfg.Wait)
		defer t.Stop()
		select {
		case <-s.profiled:
		case <-t.C:
		}
	}
	return s.opaque.Load()
}

// orNil is s for a mesh service name, else nil (forward as addressed).
func (s *Service) orNil() *Service {
	if s.mesh {
		return s
	}
	return nil
}

// meshName reports whether authority's host is under svc.<ClusterDomain>.
func (r *Resolver) meshName(authority string) bool {
	if r.cfg.ClusterDomain == "" {
		return false
	}
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	return strings.HasSuffix(host, ".svc."+strings.ToLower(strings.TrimSuffix(r.cfg.ClusterDomain, ".")))
}

// MeshPort is the port the proxy in front of endpoint addr accepts mTLS
// on, or 0 if discovery has not said.
func (r *Resolver) MeshPort(addr string) uint16 {
	if v, ok := r.meshPorts.Load(addr); ok {
		return v.(uint16)
	}
	return 0
}

// Failed records that connecting to endpoint addr of any service failed:
// the endpoint is ejected from every service it belongs to.
func (r *Resolver) Failed(addr string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, s := range r.services {
		if set := s.set.Load(); set != nil {
			for _, ep := range set.Endpoints {
				if ep.Addr == addr {
					ep.ConnectFailed()
				}
			}
		}
	}
}

// evictIdle stops watching services unused for the idle timeout.
func (r *Resolver) evictIdle() {
	t := time.NewTicker(r.cfg.IdleTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-r.cfg.IdleTimeout).UnixNano()
		r.mu.Lock()
		for a, s := range r.services {
			if s.used.Load() < cutoff {
				s.cancel()
				delete(r.services, a)
			}
		}
		r.mu.Unlock()
	}
}

// watch keeps s's endpoints and routes current until ctx ends.
func (r *Resolver) watch(ctx context.Context, s *Service) {
	if r.cfg.Ready != nil {
		select {
		case <-r.cfg.Ready:
		case <-ctx.Done():
			return
		}
	}
	go r.keep(ctx, s, "profile", r.followProfile)
	r.keep(ctx, s, "destination", r.follow)
}

// keep runs one stream of s, reconnecting with jittered exponential
// backoff, until ctx ends or the control plane says the authority is not
// one it can ever resolve.
func (r *Resolver) keep(ctx context.Context, s *Service, what string, follow func(context.Context, *Service) (bool, error)) {
	backoff := backoffMin
	for ctx.Err() == nil {
		got, err := follow(ctx, s)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.InvalidArgument {
			// Not a service name the control plane can resolve, ever:
			// forward as addressed.
			r.cfg.Log.Debug("not a discoverable authority", "authority", s.authority, "error", err)
			if what == "destination" {
				r.publish(s, false, nil, nil)
			}
			return
		}
		if got {
			backoff = backoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		r.cfg.Log.Debug(what+" stream ended; keeping the last state", "authority", s.authority, "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// followProfile reads one profile stream into s's routes.
func (r *Resolver) followProfile(ctx context.Context, s *Service) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.cfg.Client.GetProfile(ctx, &destinationv1.GetDestination{Authority: s.authority, ContextNamespace: r.cfg.Namespace})
	if err != nil {
		return false, err
	}
	for {
		p, err := stream.Recv()
		if err != nil {
			return got, err
		}
		got = true
		s.routes.Store(route.Compile(p, r.cfg.Balance.Now))
		s.setLimit(p.GetRateLimit(), r.cfg.Caller)
		s.opaque.Store(p.GetOpaque())
		s.profiledOnce.Do(func() { close(s.profiled) })
	}
}

// follow reads one destination stream into s; got reports whether any
// update arrived.
func (r *Resolver) follow(ctx context.Context, s *Service) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.cfg.Client.Get(ctx, &destinationv1.GetDestination{Authority: s.authority, ContextNamespace: r.cfg.Namespace})
	if err != nil {
		return false, err
	}
	state := map[string]*destinationv1.Endpoint{}
	var labels map[string]string
	exists := false
	for {
		u, err := stream.Recv()
		if err != nil {
			return got, err
		}
		got = true
		switch u := u.Update.(type) {
		case *destinationv1.Update_Add:
			exists = true
			if len(u.Add.MetricLabels) > 0 {
				labels = u.Add.MetricLabels
			}
			for _, ep := range u.Add.Endpoints {
				state[ep.Address] = ep
			}
		case *destinationv1.Update_Remove:
			for _, a := range u.Remove.Addresses {
				delete(state, a)
			}
		case *destinationv1.Update_NoEndpoints:
			exists = u.NoEndpoints.Exists
			clear(state)
		}
		r.publish(s, exists, state, labels)
	}
}

// publish turns the stream's state into a new Set, keeping the balancing
// state of endpoints that did not change.
func (r *Resolver) publish(s *Service, exists bool, state map[string]*destinationv1.Endpoint, labels map[string]string) {
	old := map[string]*Endpoint{}
	if prev := s.set.Load(); prev != nil {
		for _, ep := range prev.Endpoints {
			old[ep.Addr] = ep
		}
	}
	set := &Set{Exists: exists, Labels: labels, MetricLabels: metrics.RenderDst(labels), Endpoints: make([]*Endpoint, 0, len(state))}
	for addr, e := range state {
		port := uint16(e.MeshPort)
		if ep, ok := old[addr]; ok && ep.Identity == e.Identity && ep.MeshPort == port {
			set.Endpoints = append(set.Endpoints, ep)
			continue
		}
		set.Endpoints = append(set.Endpoints, &Endpoint{Addr: addr, Identity: e.Identity, MeshPort: port, MetricLabels: metrics.RenderDst(labels, e.MetricLabels), Endpoint: s.bal.NewEndpoint()})
		if port != 0 {
			r.meshPorts.Store(addr, port)
		}
	}
	s.set.Store(set)
	s.readyOnce.Do(func() { close(s.ready) })
}
