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
	"strings"
	"sync"
	"time"

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
}

type lease struct {
	expires  time.Time
	identity string
}

// Registry serves the Registry API and expires lapsed leases.
type Registry struct {
	destinationv1.UnimplementedRegistryServer
	cfg Config

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
	return &Registry{cfg: cfg, leases: map[string]lease{}}
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
		g.leases[w.Metadata.Namespace+"/"+w.Metadata.Name] = lease{expires: exp, identity: spec.Identity}
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
func (g *Registry) Register(ctx context.Context, req *destinationv1.RegisterRequest) (*destinationv1.Lease, error) {
	id, key, err := g.callerKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if err := g.owned(key, id); err != nil {
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
	if spec.Service != "" {
		if err := g.cfg.IPs.EnsureService(ctx, id.Namespace, spec.Service, svcPorts); err != nil {
			return nil, storeStatus(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.cfg.Store.Apply(ctx, w); err != nil {
		return nil, storeStatus(err)
	}
	g.leases[key] = lease{expires: g.cfg.Now().Add(g.cfg.TTL), identity: id.String()}
	g.cfg.Log.Info("workload registered", "workload", key, "service", spec.Service, "address", spec.Address, "identity", id.String())
	return g.lease(key), nil
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
	if err := g.ownedLocked(key, id); err != nil {
		return nil, err
	}
	// Deleted behind the lease's back (trellis delete): register again.
	if _, err := g.cfg.Store.Get(ctx, store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetName()}); errors.Is(err, store.ErrNotFound) {
		delete(g.leases, key)
		return nil, status.Errorf(codes.NotFound, "workload %s was removed: register again", key)
	}
	g.leases[key] = lease{expires: g.cfg.Now().Add(g.cfg.TTL), identity: id.String()}
	return g.lease(key), nil
}

// Deregister removes the caller's workload at once.
func (g *Registry) Deregister(ctx context.Context, req *destinationv1.DeregisterRequest) (*destinationv1.DeregisterResponse, error) {
	id, key, err := g.callerKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if err := g.owned(key, id); err != nil {
		return nil, err
	}
	g.mu.Lock()
	delete(g.leases, key)
	g.mu.Unlock()
	err = g.cfg.Store.Delete(ctx, store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetName()})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, storeStatus(err)
	}
	g.cfg.Log.Info("workload deregistered", "workload", key)
	return &destinationv1.DeregisterResponse{}, nil
}

// owned refuses to touch a workload another identity holds.
func (g *Registry) owned(key string, id meshid.ID) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ownedLocked(key, id)
}

func (g *Registry) ownedLocked(key string, id meshid.ID) error {
	if l, ok := g.leases[key]; ok && l.identity != id.String() {
		return status.Errorf(codes.PermissionDenied, "workload %s belongs to %s, not %s", key, l.identity, id)
	}
	return nil
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
