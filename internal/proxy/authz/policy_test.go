package authz

import (
	"net/netip"
	"testing"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
)

func TestAuthenticationPasses(t *testing.T) {
	web := "spiffe://cluster.local/ns/shop/sa/web"
	ops := "spiffe://cluster.local/ns/ops/sa/tool"
	in, out := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.9.0.1")
	for _, tc := range []struct {
		name     string
		ids      []string
		networks []*policyv1.Network
		id       string
		addr     netip.Addr
		want     bool
	}{
		{"any identity", []string{"*"}, nil, web, out, true},
		{"any identity, none proved", []string{"*"}, nil, "", out, false},
		{"exact", []string{web}, nil, web, out, true},
		{"exact, another", []string{web}, nil, ops, out, false},
		{"namespace pattern", []string{"spiffe://cluster.local/ns/ops/*"}, nil, ops, out, true},
		{"namespace pattern, another", []string{"spiffe://cluster.local/ns/ops/*"}, nil, web, out, false},
		{"trust domain pattern", []string{"spiffe://cluster.local/*"}, nil, web, out, true},
		{"Linkerd name", []string{"web.shop.serviceaccount.identity.linkerd.cluster.local"}, nil, web, out, true},
		{"Linkerd suffix", []string{"*.ops.serviceaccount.identity.linkerd.cluster.local"}, nil, ops, out, true},
		{"Linkerd suffix, another", []string{"*.ops.serviceaccount.identity.linkerd.cluster.local"}, nil, web, out, false},
		{"network", nil, []*policyv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}, "", in, true},
		{"network, excepted", nil, []*policyv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}, web, out, false},
		{"nothing", nil, nil, web, in, false},
	} {
		a := compileAuthentication(&policyv1.Authentication{Identities: tc.ids, Networks: tc.networks})
		if got := a.passes(tc.id, tc.addr); got != tc.want {
			t.Errorf("%s: passes(%q, %v) = %v, want %v", tc.name, tc.id, tc.addr, got, tc.want)
		}
	}
}

// Every authentication of an authorization must pass; any authorization
// may allow; none denies, unless the Server audits.
func TestServerDecision(t *testing.T) {
	web := "spiffe://cluster.local/ns/shop/sa/web"
	office := &policyv1.Authentication{Networks: []*policyv1.Network{{Cidr: "192.168.0.0/16"}}}
	mesh := &policyv1.Authentication{Identities: []string{web}}
	p := compilePolicy(&policyv1.InboundPolicy{Servers: []*policyv1.Server{
		{Name: "both", Port: 80, Authorizations: []*policyv1.Authorization{{Name: "web-from-office", Authentications: []*policyv1.Authentication{mesh, office}}}},
		{Name: "either", Port: 81, Authorizations: []*policyv1.Authorization{{Name: "web", Authentications: []*policyv1.Authentication{mesh}}, {Name: "office", Authentications: []*policyv1.Authentication{office}}}},
		{Name: "audited", Port: 82, Audit: true},
	}})
	home, lan := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.168.1.1")
	for _, tc := range []struct {
		port      uint16
		id        string
		addr      netip.Addr
		allow     bool
		authzKind string
	}{
		{80, web, lan, true, "authorizationpolicy"},
		{80, web, home, false, ""},
		{80, "", lan, false, ""},
		{81, "", lan, true, "authorizationpolicy"},
		{81, web, home, true, "authorizationpolicy"},
		{81, "", home, false, ""},
		{82, "", home, true, "audit"},
	} {
		d := p.servers[tc.port].decide(tc.id, tc.addr)
		if d.allow != tc.allow || tc.allow && d.authz.kind != tc.authzKind {
			t.Errorf("port %d, %q from %v: allow %v (%s), want %v (%s)", tc.port, tc.id, tc.addr, d.allow, d.authz.kind, tc.allow, tc.authzKind)
		}
	}
}
