// Package registry is the control plane's workload registration: a proxy
// started for a workload registers it over mTLS — its certificate proves
// the identity, whose namespace becomes the workload's — and keeps a
// lease. A clean exit deregisters at once; a crashed instance's lease
// lapses and the workload is deleted, so it leaves every watcher within a
// few seconds. Leases live in memory: after a control-plane restart every
// stored workload gets a fresh lease plus a grace period to renew it.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// Defaults.
const (
	DefaultTTL          = 5 * time.Second
	DefaultRestartGrace = 10 * time.Second
)

// Config configures a Registry.
type Config struct {
	Store       store.Store
	TrustDomain string
	// TTL is how long a lease lasts without renewal; proxies renew at a third of it.
	TTL time.Duration
	// RestartGrace is added to the leases of workloads found in the store at start.
	RestartGrace time.Duration
	// ServiceGC is how long a Service the mesh created may stay without a
	// workload before it is collected; DefaultServiceGC if zero.
	ServiceGC time.Duration
	// IPs allocates services' virtual IPs.
	IPs *ClusterIPs
	Now func() time.Time
	Log *slog.Logger
	// Metrics, if set, receives the registry's metrics.
	Metrics prometheus.Registerer
}

type lease struct {
	expires  time.Time
	identity string
	endpoint string // address and mesh port: a live lease is never re-pointed
	held     bool   // lapsed, kept by self-preservation
	granted  time.Time
}

// Registry serves the Registry API and expires lapsed leases.
type Registry struct {
	destinationv1.UnimplementedRegistryServer
	cfg Config

	refused *prometheus.CounterVec
	leaseEv *prometheus.CounterVec

	mu        sync.Mutex
	leases    map[string]lease // "namespace/name"
	lastSweep time.Time
	holding   bool                 // in self-preservation
	empty     map[string]time.Time // created Services without a workload, since
}

// New returns a registry; call Load before serving and Run to expire leases.
func New(cfg Config) *Registry {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ServiceGC <= 0 {
		cfg.ServiceGC = DefaultServiceGC
	}
	g := &Registry{cfg: cfg, leases: map[string]lease{}, empty: map[string]time.Time{}, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_register_refused_total",
		Help: "Registrations and deregistrations refused, by reason: address (not registered from its own address), owner (another identity's, a live lease's or a hand-applied workload), service (identity not bound to the service).",
	}, []string{"reason"}), leaseEv: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_lease_events_total",
		Help: "Lease events: late (renewed with less than a third of the TTL left: a busy proxy or control plane), lapsed (workload removed), held (lapsed together with most others, kept a while: self-preservation).",
	}, []string{"event"})}
	for _, e := range []string{"late", "lapsed", "held"} {
		g.leaseEv.WithLabelValues(e)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(g.refused, g.leaseEv)
	}
	return g
}

// AddTo adds the Registry API to r.
func (g *Registry) AddTo(r grpc.ServiceRegistrar) { destinationv1.RegisterRegistryServer(r, g) }

// LeaseAnnotation marks the workloads the registry holds leases on; other
// workloads (applied by hand) are static.
const LeaseAnnotation = "trellis.dev/lease"

// Load grants every registered workload already in the store a lease of
// TTL plus the restart grace, so instances that outlived a control-plane
// restart keep their place while they reconnect.
func (g *Registry) Load(ctx context.Context) error {
	wls, _, err := g.cfg.Store.List(ctx, resources.KindWorkload, "", nil)
	if err != nil {
		return fmt.Errorf("loading workloads: %w", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	exp := g.cfg.Now().Add(g.cfg.TTL + g.cfg.RestartGrace)
	for _, w := range wls {
		if w.Metadata.Annotations[LeaseAnnotation] == "" {
			continue
		}
		var spec resources.WorkloadSpec
		json.Unmarshal(w.Spec, &spec)
		g.leases[w.Metadata.Namespace+"/"+w.Metadata.Name] = lease{expires: exp, identity: spec.Identity, endpoint: endpoint(spec)}
	}
	return nil
}

// Run deletes workloads whose lease lapsed, checking every quarter TTL,
// and collects the Services the mesh created once unused.
func (g *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(max(g.cfg.TTL/4, 50*time.Millisecond))
	defer t.Stop()
	gc := time.NewTicker(collectEvery)
	defer gc.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.expire(ctx)
		case <-gc.C:
			g.mu.Lock()
			if err := g.collect(ctx); err != nil && ctx.Err() == nil {
				g.cfg.Log.Warn("collecting unused services failed; retrying", "error", err)
			}
			g.mu.Unlock()
		}
	}
}

// expire deletes the workloads whose lease has lapsed. The lock is held
// across each delete, so a registration racing the sweep is never undone.
//
// Two guards keep a busy host from emptying services whose proxies are
// alive. A sweep that runs late (the control plane itself was starved or
// paused, and the renewals may be queued behind it) first gives every
// lease time to be renewed. And when most leases lapse in one sweep — more
// likely a host too busy to renew in time than most proxies dying at once
// — they are held (self-preservation) for up to holdFor past their expiry.
func (g *Registry) expire(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Now()
	last := g.lastSweep
	g.lastSweep = now
	if stalled := now.Sub(last); !last.IsZero() && stalled > g.cfg.TTL/2 {
		extended := 0
		for key, l := range g.leases {
			if until := now.Add(g.cfg.TTL / 2); l.expires.Before(until) {
				l.expires, extended = until, extended+1
				g.leases[key] = l
			}
		}
		if extended > 0 {
			g.cfg.Log.Warn("the control plane did not run for a while; leases extended so proxies can renew", "stalled", stalled.Round(time.Millisecond).String(), "leases", extended)
		}
		return
	}
	var lapsed []string
	for key, l := range g.leases {
		if now.After(l.expires) {
			lapsed = append(lapsed, key)
		}
	}
	mass := len(lapsed) >= 2 && 2*len(lapsed) > len(g.leases)
	if mass != g.holding {
		g.holding = mass
		if mass {
			g.cfg.Log.Warn("most leases lapsed at once: holding them (self-preservation) while their proxies may yet renew", "lapsed", len(lapsed), "leases", len(g.leases), "hold_for", g.holdFor().String())
		} else {
			g.cfg.Log.Info("leases renewed again: self-preservation over")
		}
	}
	for _, key := range lapsed {
		l := g.leases[key]
		if mass && now.Before(l.expires.Add(g.holdFor())) {
			if !l.held {
				l.held = true
				g.leases[key] = l
				g.leaseEv.WithLabelValues("held").Inc()
			}
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		err := g.cfg.Store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: ns, Name: name})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.cfg.Log.Warn("deleting a lapsed workload failed; retrying", "workload", key, "error", err)
			continue
		}
		delete(g.leases, key)
		g.leaseEv.WithLabelValues("lapsed").Inc()
		g.cfg.Log.Info("workload lease lapsed; removed", "workload", key, "lapsed_for", now.Sub(l.expires).Round(time.Millisecond).String())
	}
}

// holdFor is how long past its expiry self-preservation keeps a lease.
func (g *Registry) holdFor() time.Duration { return 3 * g.cfg.TTL }

// Register creates or replaces the caller's workload and grants a lease.
// The caller must register from the address it registers, under a
// service its identity is bound to, and may not take over a workload
// applied by hand, another identity's, or re-point a live lease.
func (g *Registry) Register(ctx context.Context, req *destinationv1.RegisterRequest) (*destinationv1.Lease, error) {
	id, key, err := g.callerKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	spec := resources.WorkloadSpec{Service: req.GetService(), Identity: id.String(), Address: req.GetAddress(),
		MeshPort: int(req.GetMeshPort()), AdminPort: int(req.GetAdminPort()), TapPort: int(req.GetTapPort())}
	svcPorts := make([]resources.ServicePort, 0, len(req.GetPorts()))
	for _, p := range req.GetPorts() {
		spec.Ports = append(spec.Ports, resources.WorkloadPort{Port: int(p.GetPort()), TargetPort: int(p.GetTargetPort()), Protocol: p.GetProtocol(), Name: p.GetName()})
		svcPorts = append(svcPorts, resources.ServicePort{Port: int(p.GetPort()), Protocol: p.GetProtocol()})
	}
	raw, _ := json.Marshal(spec)
	w := store.Resource{APIVersion: resources.APIVersion, Kind: resources.KindWorkload, Spec: raw,
		Metadata: store.Metadata{Name: req.GetName(), Namespace: id.Namespace, Labels: req.GetLabels(),
			Annotations: map[string]string{LeaseAnnotation: "registry"}}}
	if err := (resources.Kinds{}).Check(&w); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := fromAddress(ctx, spec.Address); err != nil {
		return nil, g.refuse(ctx, "address", key, id, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.mayTake(ctx, key, id, spec); err != nil {
		return nil, g.refuse(ctx, "owner", key, id, err)
	}
	if spec.Service != "" {
		if err := g.cfg.IPs.EnsureService(ctx, id.Namespace, spec.Service, svcPorts, id.ServiceAccount); errors.Is(err, ErrNotBound) {
			return nil, g.refuse(ctx, "service", key, id, err)
		} else if err != nil {
			return nil, storeStatus(err)
		}
	}
	if _, err := g.cfg.Store.Apply(ctx, w); err != nil {
		return nil, storeStatus(err)
	}
	now := g.cfg.Now()
	g.leases[key] = lease{expires: now.Add(g.cfg.TTL), identity: id.String(), endpoint: endpoint(spec), granted: now}
	g.cfg.Log.Info("workload registered", "workload", key, "service", spec.Service, "address", spec.Address, "identity", id.String())
	return g.lease(key), nil
}

// mayTake refuses a registration of key that would take over a static
// workload, another identity's, or re-point a live lease. Called with g.mu.
func (g *Registry) mayTake(ctx context.Context, key string, id meshid.ID, spec resources.WorkloadSpec) error {
	if err := g.owns(ctx, key, id); err != nil {
		return err
	}
	if l, ok := g.leases[key]; ok && l.endpoint != endpoint(spec) && !g.cfg.Now().After(l.expires) {
		return fmt.Errorf("workload %s is live at %s: a new endpoint may take its name once its lease lapses (within %v)", key, l.endpoint, g.cfg.TTL)
	}
	return nil
}

// owns refuses id a workload that another identity holds or that was
// applied by hand. Called with g.mu.
func (g *Registry) owns(ctx context.Context, key string, id meshid.ID) error {
	if l, ok := g.leases[key]; ok {
		if l.identity != id.String() {
			return fmt.Errorf("workload %s belongs to %s", key, l.identity)
		}
		return nil
	}
	ns, name, _ := strings.Cut(key, "/")
	cur, err := g.cfg.Store.Get(ctx, store.Key{Kind: resources.KindWorkload, Namespace: ns, Name: name})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if cur.Metadata.Annotations[LeaseAnnotation] == "" {
		return fmt.Errorf("workload %s was applied by hand: registration never replaces it", key)
	}
	var stored resources.WorkloadSpec
	if resources.Decode(cur.Spec, &stored) == nil && stored.Identity != id.String() {
		return fmt.Errorf("workload %s belongs to %s", key, stored.Identity)
	}
	return nil
}

func endpoint(s resources.WorkloadSpec) string {
	return net.JoinHostPort(s.Address, strconv.Itoa(s.MeshPort))
}

// fromAddress checks that the caller connected from addr, the address it
// registers: a workload cannot send a service's traffic anywhere but to
// itself. A loopback address (explicit mode) may be registered by any
// caller on this host.
func fromAddress(ctx context.Context, addr string) error {
	want, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	p, _ := peer.FromContext(ctx)
	from, local := addrOf(p.Addr), addrOf(p.LocalAddr)
	switch {
	case from == want.Unmap():
	case want.IsLoopback() && from.IsValid() && (from.IsLoopback() || from == local):
	default:
		return fmt.Errorf("registers address %s but connected from %v", want, from)
	}
	return nil
}

func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// refuse logs and counts a refused registration and returns its status.
func (g *Registry) refuse(ctx context.Context, reason, key string, id meshid.ID, err error) error {
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	g.refused.WithLabelValues(reason).Inc()
	g.cfg.Log.Warn("registration refused", "workload", key, "identity", id.String(), "peer", from, "reason", reason, "error", err)
	return status.Errorf(codes.PermissionDenied, "registration of %s refused: %v", key, err)
}

// Renew extends the caller's lease on name.
func (g *Registry) Renew(ctx context.Context, req *destinationv1.RenewRequest) (*destinationv1.Lease, error) {
	id, key, err := g.callerKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.leases[key]; !ok {
		return nil, status.Errorf(codes.NotFound, "workload %s is not registered (its lease lapsed?): register again", key)
	}
	if err := g.owns(ctx, key, id); err != nil {
		return nil, g.refuse(ctx, "owner", key, id, err)
	}
	// Deleted behind the lease's back (trellis delete): register again.
	if _, err := g.cfg.Store.Get(ctx, store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetName()}); errors.Is(err, store.ErrNotFound) {
		delete(g.leases, key)
		return nil, status.Errorf(codes.NotFound, "workload %s was removed: register again", key)
	}
	l, now := g.leases[key], g.cfg.Now()
	// Proxies renew every third of the TTL: two thirds is a beat missed.
	if since := now.Sub(l.granted); !l.granted.IsZero() && since > 2*g.cfg.TTL/3 {
		g.leaseEv.WithLabelValues("late").Inc()
		g.cfg.Log.Warn("lease renewed late: the proxy or the control plane is too busy to keep the pace", "workload", key,
			"since_last", since.Round(time.Millisecond).String(), "ttl", g.cfg.TTL.String())
	}
	l.expires, l.held, l.granted = now.Add(g.cfg.TTL), false, now
	g.leases[key] = l
	return g.lease(key), nil
}

// Deregister removes the caller's workload at once.
func (g *Registry) Deregister(ctx context.Context, req *destinationv1.DeregisterRequest) (*destinationv1.DeregisterResponse, error) {
	id, key, err := g.callerKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.owns(ctx, key, id); err != nil {
		return nil, g.refuse(ctx, "owner", key, id, err)
	}
	delete(g.leases, key)
	err = g.cfg.Store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetName()})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, storeStatus(err)
	}
	g.cfg.Log.Info("workload deregistered", "workload", key)
	return &destinationv1.DeregisterResponse{}, nil
}

func (g *Registry) lease(key string) *destinationv1.Lease {
	return &destinationv1.Lease{Workload: key, Ttl: durationpb.New(g.cfg.TTL)}
}

// callerKey is the caller's identity and the key of its workload name.
func (g *Registry) callerKey(ctx context.Context, name string) (meshid.ID, string, error) {
	id, err := g.Caller(ctx)
	if err != nil {
		return meshid.ID{}, "", err
	}
	return id, id.Namespace + "/" + name, nil
}

// Caller is the identity the client of a gRPC call proved with its
// certificate, in the registry's trust domain.
func (g *Registry) Caller(ctx context.Context) (meshid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return meshid.ID{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return meshid.ID{}, status.Error(codes.Unauthenticated, "registration needs the proxy's mesh certificate (mutual TLS)")
	}
	id, err := meshid.FromCertificate(info.State.VerifiedChains[0][0])
	if err != nil {
		return meshid.ID{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if id.TrustDomain != g.cfg.TrustDomain {
		return meshid.ID{}, status.Errorf(codes.PermissionDenied, "identity %s is not in trust domain %s", id, g.cfg.TrustDomain)
	}
	return id, nil
}

func storeStatus(err error) error {
	var ve *store.ValidationError
	switch {
	case errors.As(err, &ve):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
