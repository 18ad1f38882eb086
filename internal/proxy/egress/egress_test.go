package egress

import (
	"context"
	"errors"
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
		{Namespace: "trellis-egress", Name: "internet-v6", Allow: false, Networks: []*policyv1.Network{{Cidr: "fd00::/8"}}},
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
		{"[fd00::5%eth0]", false, "internet-v6"}, // a zone does not take an address out of its network
	} {
		allow, n := g.decide(targetAddr(tc.addr + ":80"))
		by := ""
		if n != nil {
			by = n.name
		}
		if allow != tc.allow || by != tc.by {
			t.Errorf("%s: allow %v by %q, want %v by %q", tc.addr, allow, by, tc.allow, tc.by)
		}
	}
}

// A name is resolved, and pinned to its first address, only while
// some network is given by address; an address, or a name when every
// network covers everything, stays as it is.
func TestPin(t *testing.T) {
	g := New("shop", metrics.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	lookups := 0
	g.Lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups++
		if host == "nowhere.example" {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1"), netip.MustParseAddr("::1")}, nil
	}
	pin := func(target string) string {
		t.Helper()
		got, err := g.Pin(context.Background(), target)
		if err != nil {
			return "error"
		}
		return got
	}
	if got := pin("localhost:80"); got != "localhost:80" || lookups != 0 {
		t.Errorf("no networks: Pin = %s after %d lookups, want the name unresolved", got, lookups)
	}
	everything := compile(&policyv1.EgressPolicy{Networks: []*policyv1.EgressNetwork{{Namespace: "shop", Name: "all", Allow: false}}})
	g.nets.Store(&everything)
	if got := pin("localhost:80"); got != "localhost:80" || lookups != 0 {
		t.Errorf("a network of every address: Pin = %s after %d lookups, want the name unresolved", got, lookups)
	}
	loopback := compile(&policyv1.EgressPolicy{Networks: []*policyv1.EgressNetwork{
		{Namespace: "shop", Name: "no-loopback", Allow: false, Networks: []*policyv1.Network{{Cidr: "127.0.0.0/8"}}}}})
	g.nets.Store(&loopback)
	for target, want := range map[string]string{
		"localhost:80":         "127.0.0.1:80",
		"10.0.0.1:443":         "10.0.0.1:443",
		"[2001:db8::1]:443":    "[2001:db8::1]:443",
		"nowhere.example:8080": "error",
	} {
		if got := pin(target); got != want {
			t.Errorf("Pin(%s) = %s, want %s", target, got, want)
		}
	}
}
