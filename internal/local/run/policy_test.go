package run

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
)

// An instance's proxy gets the inbound policy of its own flag, else its
// namespace's, else the mesh's; --require-identity names the
// application's port, --probe-path the probes from this host.
func TestProxyArgsCarryThePolicy(t *testing.T) {
	st := localapi.Status{TrustDomain: "cluster.local", ControlAddr: "127.0.0.1:8086", ClusterDomain: "cluster.local",
		DefaultInboundPolicy: "all-authenticated", NamespaceInboundPolicies: map[string]string{"shop": "deny"}}
	for _, tc := range []struct {
		namespace, own, want string
	}{
		{"default", "", "all-authenticated"},
		{"shop", "", "deny"},
		{"shop", "audit", "audit"},
	} {
		o := &Options{Name: "web", Namespace: tc.namespace, Service: "web", Port: 8080, ProxyLogLevel: "warn", DefaultInboundPolicy: tc.own, ProxyExe: "/usr/bin/trellis-proxy",
			RequireIdentity: true, ProbePaths: []string{"/healthz", "/ready"}}
		in := &instance{name: "web-0", index: 1, o: o, upstream: map[string]string{}, st: st}
		cfg := proxyConfig(t, in)
		if cfg.Authz.Default != tc.want {
			t.Errorf("namespace %s, own policy %q: the proxy's is %q, want %q", tc.namespace, tc.own, cfg.Authz.Default, tc.want)
		}
		if len(cfg.Authz.RequireIdentity) != 1 || !cfg.Authz.RequireIdentity[8081] {
			t.Errorf("require identity on %v, want the application's port 8081", cfg.Authz.RequireIdentity)
		}
		if !slices.Equal(cfg.Authz.ProbePaths, o.ProbePaths) || !slices.Equal(cfg.Authz.ProbeNetworks, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}) {
			t.Errorf("probes %v from %v, want %v from this host", cfg.Authz.ProbePaths, cfg.Authz.ProbeNetworks, o.ProbePaths)
		}
	}
}
