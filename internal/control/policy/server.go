package policy

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
)

// Server is the InboundPolicies service.
type Server struct {
	policyv1.UnimplementedInboundPoliciesServer
	store       store.Store
	trustDomain string
	// caller is the identity the client proved with its certificate.
	caller func(ctx context.Context) (meshid.ID, error)
	log    *slog.Logger
	// closed ends every stream: the control plane is stopping, and a
	// graceful stop waits for them.
	closed    chan struct{}
	closeOnce sync.Once
}

// NewServer serves the inbound policies of st's workloads to callers that
// caller identifies.
func NewServer(st store.Store, trustDomain string, caller func(context.Context) (meshid.ID, error), log *slog.Logger) *Server {
	return &Server{store: st, trustDomain: trustDomain, caller: caller, log: log, closed: make(chan struct{})}
}

// Close ends every stream (UNAVAILABLE: the proxies keep their policy and
// reconnect to the next control plane).
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// GlobalEgressNamespace holds the EgressNetworks that apply to every
// namespace (Linkerd's linkerd-egress).
const GlobalEgressNamespace = "trellis-egress"

// Register adds the InboundPolicies and EgressPolicies services to r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	policyv1.RegisterInboundPoliciesServer(r, s)
	policyv1.RegisterEgressPoliciesServer(r, egressServer{Server: s})
}

// Watch streams the inbound policy of the caller's workload.
func (s *Server) Watch(req *policyv1.WatchInbound, stream grpc.ServerStreamingServer[policyv1.InboundPolicy]) error {
	ctx := stream.Context()
	id, err := s.caller(ctx)
	if err != nil {
		return err
	}
	key := store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetWorkload()}
	relevant := func(k store.Key) bool {
		return k == key || k.Namespace == key.Namespace && slices.Contains(Kinds, k.Kind)
	}
	return follow(ctx, s.store, s.closed, func() (*policyv1.InboundPolicy, uint64, error) { return s.policy(ctx, key) }, relevant, stream.Send)
}

// egressServer is the EgressPolicies service.
type egressServer struct {
	policyv1.UnimplementedEgressPoliciesServer
	*Server
}

// Watch streams the EgressNetworks of the caller's namespace and the
// global egress namespace.
func (s egressServer) Watch(_ *policyv1.WatchEgress, stream grpc.ServerStreamingServer[policyv1.EgressPolicy]) error {
	ctx := stream.Context()
	id, err := s.caller(ctx)
	if err != nil {
		return err
	}
	namespaces := []string{id.Namespace, GlobalEgressNamespace}
	relevant := func(k store.Key) bool {
		return k.Kind == resources.KindEgressNetwork && slices.Contains(namespaces, k.Namespace)
	}
	compile := func() (*policyv1.EgressPolicy, uint64, error) {
		out := &policyv1.EgressPolicy{}
		var rv uint64
		for _, ns := range namespaces {
			rs, v, err := s.store.List(ctx, resources.KindEgressNetwork, ns, nil)
			if err != nil {
				return nil, 0, status.Errorf(codes.Unavailable, "listing egress networks: %v", err)
			}
			rv = max(rv, v)
			for _, r := range rs {
				var spec resources.EgressNetworkSpec
				if resources.Decode(r.Spec, &spec) != nil {
					continue
				}
				en := &policyv1.EgressNetwork{Namespace: ns, Name: r.Metadata.Name, Allow: spec.TrafficPolicy == "Allow"}
				for _, n := range spec.Networks {
					en.Networks = append(en.Networks, &policyv1.Network{Cidr: n.CIDR, Except: n.Except})
				}
				out.Networks = append(out.Networks, en)
			}
		}
		return out, rv, nil
	}
	return follow(ctx, s.store, s.closed, compile, relevant, stream.Send)
}

// follow sends what compile makes now, and again whenever an object
// relevant says it depends on changes and it compiles to something else,
// until ctx ends, closed closes or send fails.
func follow[M proto.Message](ctx context.Context, st store.Store, closed <-chan struct{}, compile func() (M, uint64, error), relevant func(store.Key) bool, send func(M) error) error {
	var sent M
	first := true
	for {
		m, rv, err := compile()
		if err != nil {
			return err
		}
		if first || !proto.Equal(m, sent) {
			if err := send(m); err != nil {
				return err
			}
			sent, first = m, false
		}
		if err := waitChange(ctx, st, closed, relevant, rv); err != nil {
			return err
		}
	}
}

// policy compiles the policy of the workload under key, at store version rv.
func (s *Server) policy(ctx context.Context, key store.Key) (*policyv1.InboundPolicy, uint64, error) {
	objs := Objects{}
	var rv uint64
	for _, kind := range Kinds {
		rs, v, err := s.store.List(ctx, kind, key.Namespace, nil)
		if err != nil {
			return nil, 0, status.Errorf(codes.Unavailable, "listing %s: %v", kind, err)
		}
		objs[kind], rv = rs, max(rv, v)
	}
	w, err := s.store.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &policyv1.InboundPolicy{}, rv, nil // not registered (yet): selected by nothing
	case err != nil:
		return nil, 0, status.Errorf(codes.Unavailable, "workload %s: %v", key, err)
	}
	return Compile(key.Namespace, w, s.trustDomain, objs), rv, nil
}

// waitChange returns once an object relevant says matters changed after
// rv (or the watch had to start over).
func waitChange(ctx context.Context, st store.Store, closed <-chan struct{}, relevant func(store.Key) bool, rv uint64) error {
	events, err := st.Watch(ctx, "", rv)
	if errors.Is(err, store.ErrGone) {
		return nil
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "watching: %v", err)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return status.Error(codes.Unavailable, "the control plane is stopping")
		case ev, ok := <-events:
			if !ok {
				return ctx.Err() // fell behind (nil: compile again) or ended
			}
			if relevant(ev.Object.Key()) {
				return nil
			}
		}
	}
}
