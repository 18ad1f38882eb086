package tap

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
)

// DefaultRecent is how many decisions Recent returns when not told.
const DefaultRecent = 100

// Recent returns what the proxy decided for its most recent requests that
// match the filter, newest first.
func (s *Server) Recent(_ context.Context, req *tapv1.RecentRequest) (*tapv1.RecentResponse, error) {
	m, err := newMatch(req.GetFilter())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	n := int(req.GetLimit())
	if n == 0 {
		n = DefaultRecent
	}
	n = min(n, 2*explain.Size)
	out := &tapv1.RecentResponse{}
	if s.hub.cfg.Decisions == nil {
		return out, nil
	}
	keep := func(d *explain.Decision) bool {
		if !m.selects(d.Direction, d.Method, d.Path, d.Authority) {
			return false
		}
		if m.to == "" {
			return true
		}
		endpoints := make([]string, len(d.Attempts))
		for i, a := range d.Attempts {
			endpoints[i] = a.Endpoint
		}
		return m.reaches(d.Authority, endpoints...)
	}
	list := s.hub.cfg.Decisions.Recent(n, keep)
	for i := range list {
		out.Decisions = append(out.Decisions, decisionProto(&list[i]))
	}
	return out, nil
}

// validUTF8 is s as proto3 strings must be: valid UTF-8 (a decoded path need
// not be, and a clipped one may end inside a sequence).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func decisionProto(d *explain.Decision) *tapv1.Decision {
	out := &tapv1.Decision{
		Time: timestamppb.New(d.Time), Direction: d.Direction, Method: validUTF8(d.Method), Authority: validUTF8(d.Authority), Path: validUTF8(d.Path),
		Status: uint32(d.Status), Route: d.Route, RouteKind: d.RouteKind, Rule: d.Rule, Backend: d.Backend,
		FailFast: d.FailFast, Ejected: d.EjectedEndpoints, ClientId: d.ClientID,
	}
	if d.Client.IsValid() {
		out.Client = d.Client.String()
	}
	for _, a := range d.Attempts {
		out.Attempts = append(out.Attempts, &tapv1.Attempt{Endpoint: a.Endpoint, Status: uint32(a.Status), GrpcStatus: int32(a.GRPC), Why: a.Why})
	}
	if p := d.Policy; p != nil {
		out.Policy = &tapv1.PolicyDecision{Server: p.Server, Route: p.Route, Authorization: p.Authorization, Allowed: p.Allowed,
			Reason: p.Reason, RateLimit: p.RateLimit}
		if p.Default {
			out.Policy.Server = "default:" + p.Server
		}
		switch {
		case p.AuthorizationKind == "audit":
			out.Policy.Authorization = "audit"
		case p.AuthorizationKind == "default" && p.Authorization != "probe":
			out.Policy.Authorization = "default:" + p.Authorization
		}
	}
	return out
}
