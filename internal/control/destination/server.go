// Package destination is the control plane's discovery service: it keeps
// an index of the store's services and workloads and streams, to every
// proxy that asks, the endpoints of a logical service (address, weight,
// identity, protocol hint, metric labels) and its profile. A slow stream
// never holds anything up: its bounded queue overflows, the stream is
// closed, and the proxy reconnects and starts over.
package destination

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// DefaultQueue is how many updates a stream may fall behind before it is closed.
const DefaultQueue = 64

// Server serves the Destination API from an Index.
type Server struct {
	destinationv1.UnimplementedDestinationServer
	ix *Index
}

// NewServer returns the Destination API over ix.
func NewServer(ix *Index) *Server { return &Server{ix: ix} }

// Register adds the service to r.
func (s *Server) Register(r grpc.ServiceRegistrar) { destinationv1.RegisterDestinationServer(r, s) }

// Get streams the endpoints of the requested service: the whole set
// first, then changes.
func (s *Server) Get(req *destinationv1.GetDestination, stream grpc.ServerStreamingServer[destinationv1.Update]) error {
	return s.follow(stream.Context(), req, func(prev, next *endpointSet) error {
		for _, u := range diff(prev, next) {
			if err := stream.Send(u); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetProfile streams the requested service's profile whenever it changes.
func (s *Server) GetProfile(req *destinationv1.GetDestination, stream grpc.ServerStreamingServer[destinationv1.Profile]) error {
	return s.follow(stream.Context(), req, func(prev, next *endpointSet) error {
		p := next.profile()
		if prev != nil && proto.Equal(prev.profile(), p) {
			return nil
		}
		return stream.Send(p)
	})
}

// follow subscribes to what req names and calls send with the previous
// and the next set until the stream ends or falls behind.
func (s *Server) follow(ctx context.Context, req *destinationv1.GetDestination, send func(prev, next *endpointSet) error) error {
	sub, err := s.ix.subscribe(ctx, req.GetAuthority(), req.GetContextNamespace())
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(err).Err()
		}
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer s.ix.unsubscribe(sub)
	var prev *endpointSet
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ix.done:
			return status.Error(codes.Unavailable, "the control plane is shutting down; reconnect")
		case <-sub.gone:
			return status.Error(codes.ResourceExhausted, "this stream fell behind its updates; reconnect to start over")
		case next := <-sub.queue:
			if err := send(prev, next); err != nil {
				return err
			}
			prev = next
		}
	}
}

// diff returns the updates that turn prev (nil: nothing sent yet) into next.
func diff(prev, next *endpointSet) []*destinationv1.Update {
	if len(next.endpoints) == 0 {
		if prev != nil && len(prev.endpoints) == 0 && prev.exists == next.exists {
			return nil
		}
		return []*destinationv1.Update{{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: next.exists}}}}
	}
	var out []*destinationv1.Update
	var removed []string
	if prev != nil {
		for addr := range prev.endpoints {
			if _, ok := next.endpoints[addr]; !ok {
				removed = append(removed, addr)
			}
		}
	}
	if len(removed) > 0 {
		out = append(out, &destinationv1.Update{Update: &destinationv1.Update_Remove{Remove: &destinationv1.RemoveSet{Addresses: removed}}})
	}
	var added []*destinationv1.Endpoint
	for addr, ep := range next.endpoints {
		if prev != nil {
			if old, ok := prev.endpoints[addr]; ok && proto.Equal(old, ep) {
				continue
			}
		}
		added = append(added, ep)
	}
	if len(added) > 0 {
		out = append(out, &destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.AddSet{Endpoints: added, MetricLabels: next.labels}}})
	}
	return out
}
