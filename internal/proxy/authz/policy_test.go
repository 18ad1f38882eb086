package authz

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
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
		d := p.servers[tc.port].decide(tc.id, tc.addr, nil)
		if d.allow != tc.allow || tc.allow && d.authz.kind != tc.authzKind {
			t.Errorf("port %d, %q from %v: allow %v (%s), want %v (%s)", tc.port, tc.id, tc.addr, d.allow, d.authz.kind, tc.allow, tc.authzKind)
		}
	}
}

// Each identity has its limit (unauthenticated clients share one), an
// override has its own, and the total caps them all.
func TestRateLimitScopes(t *testing.T) {
	web, ops := "spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/ops/sa/tool"
	r := compileRateLimit(&policyv1.RateLimit{Name: "l", Total: 50, Identity: 10, Overrides: []*policyv1.RateOverride{{RequestsPerSecond: 30, Identities: []string{ops}}}})
	now := int64(1000 * time.Second)
	count := func(id string, n int) (allowed int, scopes map[string]int) {
		scopes = map[string]int{}
		for range n {
			if s, _ := r.take(id, now); s == "" {
				allowed++
			} else {
				scopes[s]++
			}
		}
		return allowed, scopes
	}
	if a, s := count(web, 15); a != 10 || s["identity"] != 5 {
		t.Errorf("web: %d allowed, %v refused; want 10, 5 by identity", a, s)
	}
	if a, s := count("", 15); a != 10 || s["identity"] != 5 {
		t.Errorf("unauthenticated: %d allowed, %v refused; want 10, 5 by identity", a, s)
	}
	if a, s := count(ops, 40); a != 30 || s["override"] != 10 {
		t.Errorf("ops: %d allowed, %v refused; want 30, 10 by override", a, s)
	}
	if a, s := count("spiffe://cluster.local/ns/shop/sa/other", 10); a != 0 || s["total"] != 10 {
		t.Errorf("after 50 in total: %d allowed, %v refused; want 0, 10 by total", a, s)
	}
}

// A GET of a probe path from a probe network is allowed as a probe
// whatever the policy, unless the port's Server has routes (they decide
// then) or the port requires an identity.
func TestProbesAllowed(t *testing.T) {
	reg := metrics.NewRegistry()
	a := New(Config{Default: Deny, ProbePaths: []string{"/healthz"}, ProbeNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")},
		RequireIdentity: map[uint16]bool{83: true}}, reg, nil, slog.New(slog.DiscardHandler))
	a.policy.Store(compilePolicy(&policyv1.InboundPolicy{Servers: []*policyv1.Server{
		{Name: "plain", Port: 81},
		{Name: "routed", Port: 82, Routes: &destinationv1.Profile{
			Matches: []*destinationv1.RouteMatch{{Rule: 0, Path: &destinationv1.PathMatch{Value: "/"}}},
			Rules:   []*destinationv1.RouteRule{{Route: "default/all", Kind: "HTTPRoute", Name: "all"}},
		}},
	}}))
	host, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for _, tc := range []struct {
		port         uint16
		from         netip.Addr
		method, path string
		allow        bool
	}{
		{80, host, "GET", "/healthz", true},
		{80, host, "HEAD", "/healthz", false},
		{80, host, "POST", "/healthz", false},
		{80, host, "GET", "/other", false},
		{80, other, "GET", "/healthz", false},
		{81, host, "GET", "/healthz", true},
		{82, host, "GET", "/healthz", false},
		{83, host, "GET", "/healthz", false}, // requires an identity
		{80, host, "GET", "/healthz with a body", false},
		{80, host, "GET", "/healthz upgrading", false},
	} {
		path, extra, _ := strings.Cut(tc.path, " ")
		var body *strings.Reader
		if extra == "with a body" {
			body = strings.NewReader("x")
		}
		r := httptest.NewRequest(tc.method, path, nil)
		if body != nil {
			r = httptest.NewRequest(tc.method, path, body)
		}
		if extra == "upgrading" {
			r.Header.Set("Upgrade", "websocket")
		}
		d := a.decide(&transport.Meta{Client: netip.AddrPortFrom(tc.from, 40000)}, tc.port, r)
		if probed := d.allow && d.authz == probeAuthz; probed != tc.allow {
			t.Errorf("%s %s on port %d from %v: allow %v by %v; allowed as a probe: want %v", tc.method, tc.path, tc.port, tc.from, d.allow, d.authz, tc.allow)
		}
	}
}

// A port whose Server declares an HTTP protocol takes only HTTP: an opaque
// connection to it is refused even from a client its policy allows (not in
// audit mode); a Server declaring opaque skips detection.
func TestDeclaredProtocols(t *testing.T) {
	a := New(Config{Default: AllUnauthenticated}, metrics.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	everyone := []*policyv1.Authorization{{Name: "all", Authentications: []*policyv1.Authentication{{Networks: []*policyv1.Network{{Cidr: "0.0.0.0/0"}}}}}}
	a.policy.Store(compilePolicy(&policyv1.InboundPolicy{Servers: []*policyv1.Server{
		{Name: "web", Port: 80, ProxyProtocol: "HTTP/1", Authorizations: everyone},
		{Name: "grpc", Port: 81, ProxyProtocol: "gRPC", Authorizations: everyone},
		{Name: "trial", Port: 82, ProxyProtocol: "HTTP/2", Audit: true},
		{Name: "db", Port: 83, ProxyProtocol: "opaque", Authorizations: everyone},
		{Name: "detected", Port: 84, Authorizations: everyone},
	}}))
	for port, want := range map[uint16]bool{80: false, 81: false, 82: true, 83: true, 84: true, 85: true} {
		server, client := net.Pipe()
		served := false
		m := &transport.Meta{Client: netip.MustParseAddrPort("10.0.0.1:40000"), Target: "10.0.0.9:" + strconv.Itoa(int(port))}
		a.TCP(transport.HandlerFunc(func(context.Context, net.Conn) { served = true })).ServeConn(transport.WithMeta(context.Background(), m), server)
		client.Close()
		if served != want {
			t.Errorf("opaque connection to port %d served: %v, want %v", port, served, want)
		}
	}
	for port, want := range map[uint16]bool{80: false, 83: true, 84: false} {
		if got := a.Opaque(port); got != want {
			t.Errorf("port %d declared opaque: %v, want %v", port, got, want)
		}
	}
}

// Routes are matched on the path as a normalizing server would serve it:
// dot segments and doubled slashes do not take a request for one route's
// path under another route's authorization.
func TestRoutesMatchTheNormalizedPath(t *testing.T) {
	ops := "spiffe://cluster.local/ns/ops/sa/tool"
	a := New(Config{Default: Deny}, metrics.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	everyone := []*policyv1.Authentication{{Networks: []*policyv1.Network{{Cidr: "0.0.0.0/0"}}}}
	onlyOps := []*policyv1.Authentication{{Identities: []string{ops}}}
	a.policy.Store(compilePolicy(&policyv1.InboundPolicy{Servers: []*policyv1.Server{{
		Name: "web", Port: 80,
		Routes: &destinationv1.Profile{
			Matches: []*destinationv1.RouteMatch{
				{Rule: 0, Path: &destinationv1.PathMatch{Value: "/public"}},
				{Rule: 1, Path: &destinationv1.PathMatch{Value: "/admin"}},
			},
			Rules: []*destinationv1.RouteRule{{Route: "default/public", Kind: "HTTPRoute"}, {Route: "default/admin", Kind: "HTTPRoute"}},
		},
		Authorizations: []*policyv1.Authorization{
			{Name: "public", Route: "default/public", Authentications: everyone},
			{Name: "admin", Route: "default/admin", Authentications: onlyOps},
		},
	}}}))
	for target, want := range map[string]bool{
		"/public/page":             true,
		"/public/../admin":         false,
		"/public/%2e%2e/admin":     false,
		"/public/./../admin/users": false,
		"//admin":                  false,
		"/admin":                   false,
	} {
		r := httptest.NewRequest("GET", target, nil)
		sent := r.URL.Path
		d := a.decide(&transport.Meta{Client: netip.MustParseAddrPort("10.0.0.1:40000")}, 80, r)
		if d.allow != want {
			t.Errorf("GET %s by an unauthenticated client: allow %v, want %v (%s)", target, d.allow, want, d.reason)
		}
		if r.URL.Path != sent {
			t.Errorf("GET %s: the request's path was changed to %q (it goes on as sent)", target, r.URL.Path)
		}
	}
	d := a.decide(&transport.Meta{Client: netip.MustParseAddrPort("10.0.0.1:40000"), ClientID: ops}, 80, httptest.NewRequest("GET", "/public/../admin", nil))
	if !d.allow {
		t.Errorf("ops on /public/../admin: denied (%s); the admin route allows it", d.reason)
	}
}
