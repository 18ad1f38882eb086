package policy

import (
	"context"
	"errors"
	"log/slog"
	"slices"

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
}

// NewServer serves the inbound policies of st's workloads to callers that
// caller identifies.
func NewServer(st store.Store, trustDomain string, caller func(context.Context) (meshid.ID, error), log *slog.Logger) *Server {
	return &Server{store: st, trustDomain: trustDomain, caller: caller, log: log}
}

// Register adds the service to r.
func (s *Server) Register(r grpc.ServiceRegistrar) { policyv1.RegisterInboundPoliciesServer(r, s) }

// Watch streams the inbound policy of the caller's workload.
func (s *Server) Watch(req *policyv1.WatchInbound, stream grpc.ServerStreamingServer[policyv1.InboundPolicy]) error {
	ctx := stream.Context()
	id, err := s.caller(ctx)
	if err != nil {
		return err
	}
	key := store.Key{Kind: resources.KindWorkload, Namespace: id.Namespace, Name: req.GetWorkload()}
	var sent *policyv1.InboundPolicy
	for {
		p, rv, err := s.policy(ctx, key)
		if err != nil {
			return err
		}
		if sent == nil || !proto.Equal(p, sent) {
			if err := stream.Send(p); err != nil {
				return err
			}
			sent = p
		}
		if err := s.waitChange(ctx, key, rv); err != nil {
			return err
		}
	}
}

// policy compiles the policy of the workload under key, at store version rv.
func (s *Server) policy(ctx context.Context, key store.Key) (*policyv1.InboundPolicy, uint64, error) {
	objs := namespaceObjects{}
	var rv uint64
	for _, kind := range policyKinds {
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
	return compile(key.Namespace, w, s.trustDomain, objs), rv, nil
}

// waitChange returns once an object the policy of key depends on changed
// after rv (or the watch had to start over).
func (s *Server) waitChange(ctx context.Context, key store.Key, rv uint64) error {
	events, err := s.store.Watch(ctx, "", rv)
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
		case ev, ok := <-events:
			if !ok {
				return ctx.Err() // fell behind (nil: compile again) or ended
			}
			k := ev.Object.Key()
			if k == key || k.Namespace == key.Namespace && slices.Contains(policyKinds, k.Kind) {
				return nil
			}
		}
	}
}
