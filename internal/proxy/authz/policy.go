package authz

import (
	"context"
	"net/netip"
	"strings"
	"time"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	meshid "github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/follow"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// policy is an inbound policy compiled for decisions: the Servers by
// application port.
type policy struct {
	servers map[uint16]*server
}

type server struct {
	name   string
	audit  bool
	http   bool // its proxyProtocol is HTTP/1, HTTP/2 or gRPC: nothing else may reach the port
	opaque bool // its proxyProtocol is opaque: no detection
	authz  []authorization
	limit  *rateLimit   // nil: none
	routes *route.Table // nil: no routes attached
}

type authorization struct {
	name  string
	route string           // "namespace/name" of the route it is for; "": the Server
	auths []authentication // all must pass
}

// authentication passes a client with one of its identities, or from one
// of its networks.
type authentication struct {
	anyIdentity bool
	ids         map[string]bool // SPIFFE IDs
	names       map[string]bool // Linkerd-style names
	prefixes    []string        // SPIFFE patterns without their "*"
	suffixes    []string        // Linkerd-style patterns without their "*"
	networks    []network
}

type network struct {
	in     netip.Prefix
	except []netip.Prefix
}

// compilePolicy turns what the control plane sent into a policy.
func compilePolicy(p *policyv1.InboundPolicy) *policy {
	out := &policy{servers: map[uint16]*server{}}
	for _, s := range p.GetServers() {
		srv := &server{name: s.GetName(), audit: s.GetAudit(), limit: compileRateLimit(s.GetRateLimit())}
		switch s.GetProxyProtocol() {
		case "HTTP/1", "HTTP/2", "gRPC":
			srv.http = true
		case "opaque":
			srv.opaque = true
		}
		if s.GetRoutes() != nil {
			srv.routes = route.Compile(s.GetRoutes(), time.Now)
		}
		for _, a := range s.GetAuthorizations() {
			az := authorization{name: a.GetName(), route: a.GetRoute()}
			for _, au := range a.GetAuthentications() {
				az.auths = append(az.auths, compileAuthentication(au))
			}
			srv.authz = append(srv.authz, az)
		}
		out.servers[uint16(s.GetPort())] = srv
	}
	return out
}

func compileAuthentication(au *policyv1.Authentication) authentication {
	a := authentication{ids: map[string]bool{}, names: map[string]bool{}}
	for _, id := range au.GetIdentities() {
		switch {
		case id == "*":
			a.anyIdentity = true
		case strings.HasPrefix(id, "spiffe://") && strings.HasSuffix(id, "/*"):
			a.prefixes = append(a.prefixes, strings.TrimSuffix(id, "*"))
		case strings.HasPrefix(id, "spiffe://"):
			a.ids[id] = true
		case strings.HasPrefix(id, "*."):
			a.suffixes = append(a.suffixes, strings.TrimPrefix(id, "*"))
		default:
			a.names[id] = true
		}
	}
	for _, n := range au.GetNetworks() {
		p, err := netip.ParsePrefix(n.GetCidr())
		if err != nil {
			continue // validated by the control plane
		}
		nw := network{in: p.Masked()}
		for _, e := range n.GetExcept() {
			if q, err := netip.ParsePrefix(e); err == nil {
				nw.except = append(nw.except, q.Masked())
			}
		}
		a.networks = append(a.networks, nw)
	}
	return a
}

// passes reports whether a client with identity id (SPIFFE, "" for none)
// at addr passes.
func (a authentication) passes(id string, addr netip.Addr) bool {
	if id != "" && (a.anyIdentity || a.ids[id] || a.matchPatterns(id)) {
		return true
	}
	for _, n := range a.networks {
		if n.in.Contains(addr) && !containsAny(n.except, addr) {
			return true
		}
	}
	return false
}

func (a authentication) matchPatterns(id string) bool {
	for _, p := range a.prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	if len(a.suffixes) == 0 && len(a.names) == 0 {
		return false
	}
	name := linkerdName(id)
	if a.names[name] {
		return true
	}
	for _, s := range a.suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// linkerdName is a SPIFFE ID as Linkerd names identities:
// SA.NS.serviceaccount.identity.linkerd.TRUST-DOMAIN.
func linkerdName(id string) string {
	p, err := meshid.Parse(id)
	if err != nil {
		return ""
	}
	return p.ServiceAccount + "." + p.Namespace + ".serviceaccount.identity.linkerd." + p.TrustDomain
}

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Watch keeps the authorizer's policy that of workload, as the control
// plane streams it through client, until ctx ends. While the control
// plane is away the last policy stays in force.
func (a *Authorizer) Watch(ctx context.Context, client policyv1.InboundPoliciesClient, workload string) {
	follow.Stream(ctx, a.log, "inbound policy", func(ctx context.Context) (func() (*policyv1.InboundPolicy, error), error) {
		stream, err := client.Watch(ctx, &policyv1.WatchInbound{Workload: workload})
		if err != nil {
			return nil, err
		}
		return stream.Recv, nil
	}, func(p *policyv1.InboundPolicy) {
		a.policy.Store(compilePolicy(p))
		a.log.Info("inbound policy updated", "servers", len(p.GetServers()))
	})
}
