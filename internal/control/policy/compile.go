// Package policy serves proxies their workload's inbound policy: which
// Servers select the workload's ports and which authorizations allow calls
// to each, compiled from the policy resources (internal/control/resources)
// into the InboundPolicies API (api/policy/v1) and streamed again after
// every change.
package policy

import (
	"cmp"
	"encoding/json"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/control/destination"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// Objects are the policy resources of one namespace, by kind.
type Objects map[string][]store.Resource

// Kinds are the kinds an inbound policy is compiled from.
var Kinds = []string{resources.KindServer, resources.KindAuthorizationPolicy, resources.KindMeshTLSAuthentication, resources.KindNetworkAuthentication,
	resources.KindHTTPLocalRateLimitPolicy, resources.KindHTTPRoute, resources.KindGRPCRoute}

// Compile is the inbound policy of workload w (its labels) in namespace
// ns, whose identities are in trustDomain, from the namespace's objects.
func Compile(ns string, w store.Resource, trustDomain string, objs Objects) *policyv1.InboundPolicy {
	out := &policyv1.InboundPolicy{}
	for _, srv := range objs[resources.KindServer] {
		var s resources.ServerSpec
		if resources.Decode(srv.Spec, &s) != nil || !s.Selects(w.Metadata.Labels) {
			continue
		}
		port, ok := serverPort(s.Port, w)
		if !ok {
			continue // a port name the workload does not have
		}
		ps := &policyv1.Server{Name: srv.Metadata.Name, Port: uint32(port), ProxyProtocol: s.ProxyProtocol, Audit: s.AccessPolicy == "audit"}
		routes := serverRoutes(srv.Metadata.Name, append(slices.Clone(objs[resources.KindHTTPRoute]), objs[resources.KindGRPCRoute]...))
		if len(routes) > 0 {
			ps.Routes = destination.InboundRoutes(routes)
		}
		for _, ap := range objs[resources.KindAuthorizationPolicy] {
			var a resources.AuthorizationPolicySpec
			if resources.Decode(ap.Spec, &a) != nil {
				continue
			}
			authz := &policyv1.Authorization{Name: ap.Metadata.Name}
			switch {
			case targets(a.TargetRef, srv.Metadata.Name, ns):
			case slices.ContainsFunc(routes, func(r store.Resource) bool { return r.Kind == a.TargetRef.Kind && r.Metadata.Name == a.TargetRef.Name }):
				authz.Route = ns + "/" + a.TargetRef.Name
			default:
				continue
			}
			for _, ref := range a.RequiredAuthenticationRefs {
				authz.Authentications = append(authz.Authentications, authentication(ref, ns, trustDomain, objs))
			}
			ps.Authorizations = append(ps.Authorizations, authz)
		}
		slices.SortFunc(ps.Authorizations, func(a, b *policyv1.Authorization) int { return strings.Compare(a.Name, b.Name) })
		ps.RateLimit = rateLimit(srv.Metadata.Name, ns, trustDomain, objs)
		out.Servers = append(out.Servers, ps)
	}
	slices.SortFunc(out.Servers, func(a, b *policyv1.Server) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.Name, b.Name))
	})
	out.Servers = denyConflicts(out.Servers)
	return out
}

// denyConflicts replaces the Servers (sorted by port) that claim the same
// port of the workload — a named port and a number the store could not
// tell apart — by one that denies every call: neither's policy may win by
// chance, nor may the default policy decide.
func denyConflicts(servers []*policyv1.Server) []*policyv1.Server {
	var out []*policyv1.Server
	for i := 0; i < len(servers); {
		j := i + 1
		for j < len(servers) && servers[j].Port == servers[i].Port {
			j++
		}
		if j-i == 1 {
			out = append(out, servers[i])
		} else {
			var names []string
			for _, s := range servers[i:j] {
				names = append(names, s.Name)
			}
			out = append(out, &policyv1.Server{Name: "conflict:" + strings.Join(names, ","), Port: servers[i].Port})
		}
		i = j
	}
	return out
}

// serverPort is the application port of workload w a Server's port
// means: its number, or the target port of w's port of that name.
func serverPort(p intstr.IntOrString, w store.Resource) (int, bool) {
	if p.Type == intstr.Int {
		return p.IntValue(), true
	}
	var spec resources.WorkloadSpec
	if resources.Decode(w.Spec, &spec) != nil {
		return 0, false
	}
	for _, wp := range spec.Ports {
		if wp.Name == p.StrVal {
			return wp.TargetPort, true
		}
	}
	return 0, false
}

// rateLimit is the rate limit policy of Server server (the store allows
// one), or nil.
func rateLimit(server, ns, trustDomain string, objs Objects) *policyv1.RateLimit {
	for _, r := range objs[resources.KindHTTPLocalRateLimitPolicy] {
		var s resources.HTTPLocalRateLimitPolicySpec
		if resources.Decode(r.Spec, &s) != nil || s.TargetRef.Kind != resources.KindServer || s.TargetRef.Name != server {
			continue
		}
		rl := &policyv1.RateLimit{Name: r.Metadata.Name}
		if s.Total != nil {
			rl.Total = uint32(s.Total.RequestsPerSecond)
		}
		if s.Identity != nil {
			rl.Identity = uint32(s.Identity.RequestsPerSecond)
		}
		for _, o := range s.Overrides {
			ov := &policyv1.RateOverride{RequestsPerSecond: uint32(o.RequestsPerSecond)}
			for _, ref := range o.ClientRefs {
				ov.Identities = append(ov.Identities, identityOf(ref, ns, trustDomain))
			}
			rl.Overrides = append(rl.Overrides, ov)
		}
		return rl
	}
	return nil
}

// serverRoutes are the HTTPRoutes and GRPCRoutes attached to Server server.
func serverRoutes(server string, routes []store.Resource) []store.Resource {
	var out []store.Resource
	for _, r := range routes {
		var spec struct {
			ParentRefs []resources.PolicyRef `json:"parentRefs"`
		}
		if json.Unmarshal(r.Spec, &spec) != nil {
			continue
		}
		if slices.ContainsFunc(spec.ParentRefs, func(p resources.PolicyRef) bool {
			return p.Group == resources.PolicyGroup && p.Kind == resources.KindServer && p.Name == server
		}) {
			out = append(out, r)
		}
	}
	return out
}

// targets reports whether an AuthorizationPolicy's target is the Server
// named server, or its namespace.
func targets(ref resources.PolicyRef, server, ns string) bool {
	switch ref.Kind {
	case resources.KindServer:
		return ref.Name == server
	case "Namespace":
		return ref.Name == ns
	}
	return false
}

// authentication resolves a required authentication. One that does not
// exist passes nobody.
func authentication(ref resources.PolicyRef, ns, trustDomain string, objs Objects) *policyv1.Authentication {
	a := &policyv1.Authentication{Kind: ref.Kind, Name: ref.Name}
	switch ref.Kind {
	case "ServiceAccount":
		a.Identities = []string{identityOf(ref, ns, trustDomain)}
	case resources.KindMeshTLSAuthentication:
		if r, ok := find(objs[ref.Kind], ref.Name); ok {
			var m resources.MeshTLSAuthenticationSpec
			if resources.Decode(r.Spec, &m) == nil {
				a.Identities = append(a.Identities, m.Identities...)
				for _, id := range m.IdentityRefs {
					a.Identities = append(a.Identities, identityOf(id, ns, trustDomain))
				}
			}
		}
	case resources.KindNetworkAuthentication:
		if r, ok := find(objs[ref.Kind], ref.Name); ok {
			var n resources.NetworkAuthenticationSpec
			if resources.Decode(r.Spec, &n) == nil {
				for _, net := range n.Networks {
					a.Networks = append(a.Networks, &policyv1.Network{Cidr: net.CIDR, Except: net.Except})
				}
			}
		}
	}
	return a
}

// identityOf is the identity pattern of a ServiceAccount or Namespace
// reference.
func identityOf(ref resources.PolicyRef, ns, trustDomain string) string {
	if ref.Namespace != "" {
		ns = ref.Namespace
	}
	if ref.Kind == "Namespace" {
		return "spiffe://" + trustDomain + "/ns/" + ref.Name + "/*"
	}
	return "spiffe://" + trustDomain + "/ns/" + ns + "/sa/" + ref.Name
}

func find(rs []store.Resource, name string) (store.Resource, bool) {
	for _, r := range rs {
		if r.Metadata.Name == name {
			return r, true
		}
	}
	return store.Resource{}, false
}
