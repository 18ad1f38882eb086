package localapi

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
)

// DataDir is the default data directory: $TRELLIS_DATA_DIR, else
// /var/lib/trellis for root (proxies dropping privileges must reach their
// files), else ~/.trellis.
func DataDir() string {
	if d := os.Getenv("TRELLIS_DATA_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/trellis"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".trellis"
	}
	return filepath.Join(home, ".trellis")
}

// WriteTable writes s for a person: what runs where.
func (s Status) WriteTable(out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "control plane\t%s (pid %d)\n", s.Version, s.PID)
	fmt.Fprintf(w, "data directory\t%s\n", s.DataDir)
	fmt.Fprintf(w, "identity, destination\t%s (gRPC, TLS)\n", s.ControlAddr)
	fmt.Fprintf(w, "admin\thttp://%s/metrics\n", s.AdminAddr)
	if s.DashboardURL != "" {
		fmt.Fprintf(w, "dashboard\t%s\n", s.DashboardURL)
	}
	fmt.Fprintf(w, "trust anchor\t%s\n", s.TrustAnchor)
	if s.DefaultInboundPolicy != "" {
		fmt.Fprintf(w, "inbound policy\t%s (the default of the proxies trellis run starts)\n", s.DefaultInboundPolicy)
	}
	for _, ns := range slices.Sorted(maps.Keys(s.NamespaceInboundPolicies)) {
		fmt.Fprintf(w, "inbound policy\t%s in namespace %s\n", s.NamespaceInboundPolicies[ns], ns)
	}
	if s.Network != "" {
		fmt.Fprintf(w, "network\t%s on %s (instances in their own network namespaces)\n", s.Network, s.Bridge)
		fmt.Fprintf(w, "DNS\t%s (*.svc.%s)\n", s.DNSAddr, s.ClusterDomain)
	} else {
		fmt.Fprintf(w, "network\tnone (instances run in explicit mode on loopback)\n")
	}
	return w.Flush()
}
