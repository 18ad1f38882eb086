// Package authz decides, on the inbound proxy, whether a client may reach
// the application, and enforces it: a denied HTTP request gets 403 (gRPC:
// PERMISSION_DENIED), a denied connection is closed. The decision follows
// the proxy's default inbound policy — Linkerd's: all-unauthenticated,
// all-authenticated, cluster-authenticated, cluster-unauthenticated, deny,
// audit — and the ports that require a mesh identity; every decision is
// counted as Linkerd counts it (inbound_{http,tcp}_authz_{allow,deny}_total).
package authz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// The default inbound policies.
const (
	AllUnauthenticated     = "all-unauthenticated"
	AllAuthenticated       = "all-authenticated"
	ClusterAuthenticated   = "cluster-authenticated"
	ClusterUnauthenticated = "cluster-unauthenticated"
	Deny                   = "deny"
	Audit                  = "audit"
)

// Policies are the default inbound policies, the first the default.
var Policies = []string{AllUnauthenticated, AllAuthenticated, ClusterAuthenticated, ClusterUnauthenticated, Deny, Audit}

// DefaultClusterNetworks are the networks cluster-* policies trust, as
// Linkerd's: the private and shared address ranges.
const DefaultClusterNetworks = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"

// Config is what the inbound proxy enforces.
type Config struct {
	// Default is the default inbound policy (one of Policies).
	Default string
	// ClusterNetworks are the client networks cluster-* policies admit.
	ClusterNetworks []netip.Prefix
	// RequireIdentity are the application ports whose clients must have a
	// mesh identity, whatever the default policy.
	RequireIdentity map[uint16]bool
}

// Check reports what makes the configuration unusable, naming the flag.
func (c Config) Check() error {
	if !slices.Contains(Policies, c.Default) {
		return fmt.Errorf("default-inbound-policy %q: must be one of %s", c.Default, strings.Join(Policies, ", "))
	}
	return nil
}

// Authorizer decides and counts.
type Authorizer struct {
	cfg    Config
	log    *slog.Logger
	series [2][2]*metrics.Counters // [tcp, http][deny, allow]
	cache  sync.Map                // seriesKey -> *atomic.Uint64
}

// The protocols and outcomes of the series.
const (
	tcp, http1 = 0, 1
	deny, pass = 0, 1
)

type seriesKey struct {
	proto, outcome int
	port           uint16
	policy         string
}

// New returns the authorizer of cfg, its counters registered in reg.
func New(cfg Config, reg *metrics.Registry, log *slog.Logger) *Authorizer {
	a := &Authorizer{cfg: cfg, log: log}
	a.series[tcp][deny] = reg.Counters("inbound_tcp_authz_deny_total", "Total count of inbound TCP connections the authorization policy denied.")
	a.series[tcp][pass] = reg.Counters("inbound_tcp_authz_allow_total", "Total count of inbound TCP connections the authorization policy allowed.")
	a.series[http1][deny] = reg.Counters("inbound_http_authz_deny_total", "Total count of inbound HTTP requests the authorization policy denied.")
	a.series[http1][pass] = reg.Counters("inbound_http_authz_allow_total", "Total count of inbound HTTP requests the authorization policy allowed.")
	return a
}

// decision is the outcome for one client, with the policy that decided.
type decision struct {
	allow  bool
	policy string
	reason string // why a client is denied
}

// decide applies the policy of the connection m describes, to the
// application's port.
func (a *Authorizer) decide(m *transport.Meta, port uint16) decision {
	authenticated := m.ClientID != ""
	policy := a.cfg.Default
	if a.cfg.RequireIdentity[port] && !authenticated && policy != Deny {
		return decision{policy: policy, reason: fmt.Sprintf("port %d requires a mesh identity", port)}
	}
	inCluster := slices.ContainsFunc(a.cfg.ClusterNetworks, func(p netip.Prefix) bool { return p.Contains(m.Client.Addr().Unmap()) })
	d := decision{policy: policy}
	switch policy {
	case AllUnauthenticated, Audit:
		d.allow = true
	case AllAuthenticated:
		d.allow, d.reason = authenticated, "the client has no mesh identity"
	case ClusterAuthenticated:
		d.allow, d.reason = authenticated && inCluster, "the client has no mesh identity, or is outside the cluster networks"
	case ClusterUnauthenticated:
		d.allow, d.reason = inCluster, "the client is outside the cluster networks"
	case Deny:
		d.reason = "the default policy denies every client"
	}
	return d
}

// count counts a decision of proto on port.
func (a *Authorizer) count(proto int, port uint16, d decision) {
	outcome := deny
	if d.allow {
		outcome = pass
	}
	k := seriesKey{proto, outcome, port, d.policy}
	c, ok := a.cache.Load(k)
	if !ok {
		labels := []string{"srv_group", "", "srv_kind", "default", "srv_name", d.policy, "srv_port", strconv.Itoa(int(port))}
		if d.allow {
			labels = append(labels, "authz_group", "", "authz_kind", "default", "authz_name", d.policy)
		}
		c, _ = a.cache.LoadOrStore(k, a.series[proto][outcome].With(labels...))
	}
	c.(*atomic.Uint64).Add(1)
}

// HTTP is the stage that answers a denied request itself.
func (a *Authorizer) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := transport.MetaFrom(r.Context())
		port := m.TargetPort()
		d := a.decide(m, port)
		a.count(http1, port, d)
		if !d.allow {
			a.log.Debug("request denied", "client", m.Client.String(), "client_id", m.ClientID, "target", m.Target, "policy", d.policy, "reason", d.reason)
			httpproxy.WriteError(w, r, http.StatusForbidden, "unauthorized request on port "+strconv.Itoa(int(port))+": "+d.reason)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TCP is the stage that closes a denied connection (opaque TCP).
func (a *Authorizer) TCP(next transport.Handler) transport.Handler {
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		port := m.TargetPort()
		d := a.decide(m, port)
		a.count(tcp, port, d)
		if !d.allow {
			a.log.Debug("connection denied", "client", m.Client.String(), "client_id", m.ClientID, "target", m.Target, "policy", d.policy, "reason", d.reason)
			c.Close()
			return
		}
		next.ServeConn(ctx, c)
	})
}
