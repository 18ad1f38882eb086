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
	DefaultTTL          = 3 * time.Second
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
}

// Registry serves the Registry API and expires lapsed leases.
type Registry struct {
	destinationv1.UnimplementedRegistryServer
	cfg Config

	refused *prometheus.CounterVec

	mu     sync.Mutex
	leases map[string]lease // "namespace/name"
}

// New returns a registry; call Load before serving and Run to expire leases.
func New(cfg Config) *Registry {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &Registry{cfg: cfg, leases: map[string]lease{}, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "registry_register_refused_total",
		Help: "Registrations and deregistrations refused, by reason: address (not registered from its own address), owner (another identity's, a live lease's or a hand-applied workload), service (identity not bound to the service).",
	}, []string{"reason"})}
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(g.refused)
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

// Run deletes workloads whose lease lapsed, checking every quarter TTL.
func (g *Registry) Run(ctx context.Context) error {
	t := time.NewTicker(max(g.cfg.TTL/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.expire(ctx)
		}
	}
}

// expire deletes the workloads whose lease has lapsed. The lock is held
// across each delete, so a registration racing the sweep is never undone.
func (g *Registry) expire(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Now()
	for key, l := range g.leases {
		if !now.After(l.expires) {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		err := g.cfg.Store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: ns, Name: name})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.cfg.Log.Warn("deleting a lapsed workload failed; retrying", "workload", key, "error", err)
			continue
		}
		delete(g.leases, key)
		g.cfg.Log.Info("workload lease lapsed; removed", "workload", key)
	}
}

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
		spec.Ports = append(spec.Ports, resources.WorkloadPort{Port: int(p.GetPort()), TargetPort: int(p.GetTargetPort()), Protocol: p.GetProtocol()})
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
	g.leases[key] = lease{expires: g.cfg.Now().Add(g.cfg.TTL), identity: id.String(), endpoint: endpoint(spec)}
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
	l := g.leases[key]
	l.expires = g.cfg.Now().Add(g.cfg.TTL)
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
	id, err := g.caller(ctx)
	if err != nil {
		return meshid.ID{}, "", err
	}
	return id, id.Namespace + "/" + name, nil
}

// caller is the identity the client proved with its certificate.
func (g *Registry) caller(ctx context.Context) (meshid.ID, error) {
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
