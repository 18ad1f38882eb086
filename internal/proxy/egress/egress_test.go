package egress

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// The most specific network decides; at equal specificity the workload's
// own namespace before the global one, Deny before Allow; an excepted
// subnet is not covered; nothing covers: allowed.
func TestDecide(t *testing.T) {
	g := New("shop", metrics.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	nets := compile(&policyv1.EgressPolicy{Networks: []*policyv1.EgressNetwork{
		{Namespace: "trellis-egress", Name: "internet", Allow: false, Networks: []*policyv1.Network{{Cidr: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}}},
		{Namespace: "trellis-egress", Name: "partner", Allow: true, Networks: []*policyv1.Network{{Cidr: "203.0.113.0/24"}}},
		{Namespace: "shop", Name: "partner-off", Allow: false, Networks: []*policyv1.Network{{Cidr: "203.0.113.0/24"}}},
		{Namespace: "shop", Name: "payments", Allow: true, Networks: []*policyv1.Network{{Cidr: "198.51.100.7/32"}}},
		{Namespace: "shop", Name: "payments-off", Allow: false, Networks: []*policyv1.Network{{Cidr: "198.51.100.7/32"}}},
	}})
	g.nets.Store(&nets)
	for _, tc := range []struct {
		addr  string
		allow bool
		by    string
	}{
		{"8.8.8.8", false, "internet"},
		{"10.1.2.3", true, ""},
		{"203.0.113.9", false, "partner-off"},
		{"198.51.100.7", false, "payments-off"},
	} {
		allow, n := g.decide(netip.MustParseAddr(tc.addr))
		by := ""
		if n != nil {
			by = n.name
		}
		if allow != tc.allow || by != tc.by {
			t.Errorf("%s: allow %v by %q, want %v by %q", tc.addr, allow, by, tc.allow, tc.by)
		}
	}
}
