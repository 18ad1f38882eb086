// Package authz decides, on the inbound proxy, whether a client may reach
// the application, and enforces it: a denied HTTP request gets 403 (gRPC:
// PERMISSION_DENIED), a denied connection is closed. A port a Server
// selects follows that Server's authorization policies and rate limit
// (429; as the control plane streams them, policy.go: Watch); any other
// port follows the
// proxy's default inbound policy — Linkerd's: all-unauthenticated,
// all-authenticated, cluster-authenticated, cluster-unauthenticated, deny,
// audit — and the ports that require a mesh identity. Every decision is
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
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/ratelimit"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
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
	// ProbePaths are the application's health probes: a GET of one from
	// ProbeNetworks is allowed whatever the policy, unless the port's
	// Server has routes (they decide then), as Linkerd does, or the port
	// requires an identity.
	ProbePaths    []string
	ProbeNetworks []netip.Prefix
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
	policy atomic.Pointer[policy]  // the Servers of the workload, from the control plane
	series [2][2]*metrics.Counters // [tcp, http][deny, allow]
	cache  sync.Map                // seriesKey -> *atomic.Uint64
	// notFound counts requests no route of their Server matched.
	notFound *metrics.Counters
	// limited counts requests rate limits refused.
	limited      *metrics.Counters
	limitedCache sync.Map // limitedKey -> *atomic.Uint64
	// decisions records every HTTP decision for explain (nil: none).
	decisions *explain.InboundLog
}

type limitedKey struct {
	port              uint16
	srv, limit, scope string
}

// The protocols and outcomes of the series.
const (
	tcp, http1 = 0, 1
	deny, pass = 0, 1
)

type seriesKey struct {
	proto, outcome    int
	port              uint16
	srv, authz, route ref
}

// ref is what a metric label set names: a Server or a default policy, an
// authorization.
type ref struct{ group, kind, name string }

// New returns the authorizer of cfg, its counters registered in reg, its
// HTTP decisions recorded in decisions (if not nil).
func New(cfg Config, reg *metrics.Registry, decisions *explain.InboundLog, log *slog.Logger) *Authorizer {
	a := &Authorizer{cfg: cfg, log: log, decisions: decisions}
	a.series[tcp][deny] = reg.Counters("inbound_tcp_authz_deny_total", "Total count of inbound TCP connections the authorization policy denied.")
	a.series[tcp][pass] = reg.Counters("inbound_tcp_authz_allow_total", "Total count of inbound TCP connections the authorization policy allowed.")
	a.series[http1][deny] = reg.Counters("inbound_http_authz_deny_total", "Total count of inbound HTTP requests the authorization policy denied.")
	a.series[http1][pass] = reg.Counters("inbound_http_authz_allow_total", "Total count of inbound HTTP requests the authorization policy allowed.")
	a.notFound = reg.Counters("inbound_http_route_not_found_total", "Total count of inbound HTTP requests no route of their Server matched (404).")
	a.limited = reg.Counters("inbound_http_local_ratelimit_total", "Total count of inbound HTTP requests a Server's local rate limit refused (429).")
	return a
}

// decision is the outcome for one client: the Server (or default policy)
// and the authorization that decided.
type decision struct {
	allow      bool
	srv, authz ref
	route      ref        // the Server's route the request matched, if any
	noRoute    bool       // the Server has routes and none matched
	reason     string     // why a client is denied
	limit      *rateLimit // the Server's rate limit, if any
}

// Labels of the policy kinds.
const (
	policyGroup  = "policy.trellis.dev"
	gatewayGroup = "gateway.networking.k8s.io"
	kindDefault  = "default"
)

// decide applies the policy of the connection m describes, to the
// application's port.
func (a *Authorizer) decide(m *transport.Meta, port uint16, r *http.Request) decision {
	authenticated := m.ClientID != ""
	addr := m.Client.Addr().Unmap()
	if p := a.policy.Load(); p != nil {
		if s, ok := p.servers[port]; ok {
			if s.routes == nil && a.probe(r, addr) {
				return decision{allow: true, srv: ref{policyGroup, "server", s.name}, authz: probeAuthz}
			}
			return s.decide(m.ClientID, addr, r)
		}
	}
	policy := a.cfg.Default
	d := decision{srv: ref{"", kindDefault, policy}, authz: ref{"", kindDefault, policy}}
	if a.cfg.RequireIdentity[port] && !authenticated { // probes too: the port's owner said so
		d.reason = fmt.Sprintf("port %d requires a mesh identity", port)
		return d
	}
	if a.probe(r, addr) {
		d.allow, d.authz = true, probeAuthz
		return d
	}
	inCluster := slices.ContainsFunc(a.cfg.ClusterNetworks, func(p netip.Prefix) bool { return p.Contains(addr) })
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

// probeAuthz is what allows a health probe (Linkerd's default:probe).
var probeAuthz = ref{"", kindDefault, "probe"}

// probe reports whether r is a health probe of the application's: a GET
// without a body or an upgrade (nothing a tunnel could start with).
func (a *Authorizer) probe(r *http.Request, addr netip.Addr) bool {
	return r != nil && r.Method == http.MethodGet && r.ContentLength == 0 && r.Header.Get("Upgrade") == "" &&
		slices.Contains(a.cfg.ProbePaths, r.URL.Path) &&
		slices.ContainsFunc(a.cfg.ProbeNetworks, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// count counts a decision of proto on port.
func (a *Authorizer) count(proto int, port uint16, d decision) {
	outcome := deny
	if d.allow {
		outcome = pass
	}
	k := seriesKey{proto, outcome, port, d.srv, d.authz, d.route}
	if !d.allow {
		k.authz = ref{}
	}
	c, ok := a.cache.Load(k)
	if !ok {
		labels := []string{"srv_group", d.srv.group, "srv_kind", d.srv.kind, "srv_name", d.srv.name, "srv_port", strconv.Itoa(int(port))}
		if d.route.name != "" {
			labels = append(labels, "route_group", d.route.group, "route_kind", d.route.kind, "route_name", d.route.name)
		}
		if d.allow {
			labels = append(labels, "authz_group", d.authz.group, "authz_kind", d.authz.kind, "authz_name", d.authz.name)
		}
		c, _ = a.cache.LoadOrStore(k, a.series[proto][outcome].With(labels...))
	}
	c.(*atomic.Uint64).Add(1)
}

// decide applies a Server's authorizations: the first that passes allows;
// none denies, or in audit mode lets the client through, counted and
// logged as audit.
func (s *server) decide(id string, addr netip.Addr, r *http.Request) decision {
	d := decision{srv: ref{policyGroup, "server", s.name}, limit: s.limit}
	if r == nil && s.http {
		d.reason = "Server " + s.name + " declares an HTTP protocol; the connection is not HTTP"
		if s.audit {
			d.allow, d.authz = true, ref{policyGroup, "audit", s.name}
		}
		return d
	}
	matched := "" // the route of an HTTP request, when the Server has routes
	if s.routes != nil && r != nil {
		if p := route.CleanPath(r.URL.Path); p != r.URL.Path {
			u := *r.URL
			u.Path, u.RawPath = p, ""
			r = r.WithContext(r.Context()) // a copy: the request goes on as sent
			r.URL = &u
		}
		rule, _ := s.routes.Match(r)
		if rule == nil {
			d.noRoute, d.reason = true, "no route of Server "+s.name+" matches the request"
			return d
		}
		matched = rule.Route
		_, name, _ := strings.Cut(matched, "/")
		d.route = ref{gatewayGroup, rule.Kind, name}
	}
	for _, az := range s.authz {
		if az.route != "" && az.route != matched {
			continue
		}
		if !slices.ContainsFunc(az.auths, func(a authentication) bool { return !a.passes(id, addr) }) {
			d.allow, d.authz = true, ref{policyGroup, "authorizationpolicy", az.name}
			return d
		}
	}
	d.reason = "no authorization policy of Server " + s.name + " allows the client"
	if s.audit {
		d.allow, d.authz = true, ref{policyGroup, "audit", s.name}
	}
	return d
}

// countLimited counts a request a rate limit refused.
func (a *Authorizer) countLimited(port uint16, d decision, scope string) {
	k := limitedKey{port, d.srv.name, d.limit.name, scope}
	c, ok := a.limitedCache.Load(k)
	if !ok {
		c, _ = a.limitedCache.LoadOrStore(k, a.limited.With("srv_group", d.srv.group, "srv_kind", d.srv.kind, "srv_name", d.srv.name,
			"srv_port", strconv.Itoa(int(port)), "ratelimit_name", d.limit.name, "ratelimit_scope", scope))
	}
	c.(*atomic.Uint64).Add(1)
}

// logDecision logs a denial at debug (they are counted) and a call an
// audit let through at info, with the rule that would have denied it.
func (a *Authorizer) logDecision(m *transport.Meta, d decision, what string) {
	switch {
	case !d.allow:
		a.log.Debug(what+" denied", "client", m.Client.String(), "client_id", m.ClientID, "target", m.Target, "server", d.srv.name, "reason", d.reason)
	case d.authz.kind == "audit":
		a.log.Info(what+" let through by audit: it would be denied", "client", m.Client.String(), "client_id", m.ClientID, "target", m.Target, "server", d.srv.name, "reason", d.reason)
	}
}

// HTTP is the stage that answers a denied request itself.
func (a *Authorizer) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := transport.MetaFrom(r.Context())
		port := m.TargetPort()
		d := a.decide(m, port, r)
		if d.noRoute {
			a.notFound.With("srv_group", d.srv.group, "srv_kind", d.srv.kind, "srv_name", d.srv.name, "srv_port", strconv.Itoa(int(port))).Add(1)
			a.record(r, m, d, http.StatusNotFound, "")
			httpproxy.WriteError(w, r, http.StatusNotFound, d.reason)
			return
		}
		a.count(http1, port, d)
		a.logDecision(m, d, "request")
		if !d.allow {
			a.record(r, m, d, http.StatusForbidden, "")
			httpproxy.WriteError(w, r, http.StatusForbidden, "unauthorized request on port "+strconv.Itoa(int(port))+": "+d.reason)
			return
		}
		if d.limit != nil {
			if scope, retry := d.limit.take(m.ClientID, ratelimit.Now()); scope != "" {
				a.countLimited(port, d, scope)
				limit := d.limit.name + " (" + scope + " limit)"
				a.record(r, m, d, http.StatusTooManyRequests, limit)
				httpproxy.WriteRateLimited(w, r, retry, limit)
				return
			}
		}
		a.record(r, m, d, 0, "")
		next.ServeHTTP(w, r)
	})
}

// record records the decision d for r, answered with status (0: by the
// application), refused by rate limit limit ("": none).
func (a *Authorizer) record(r *http.Request, m *transport.Meta, d decision, status int, limit string) {
	if a.decisions == nil {
		return
	}
	in := explain.Inbound{Time: time.Now(), Method: explain.Clip(r.Method), Authority: explain.Clip(r.Host), Path: explain.Clip(r.URL.Path),
		Status: status, Client: m.Client, ClientID: m.ClientID,
		Policy: explain.Policy{Server: d.srv.name, Default: d.srv.kind == kindDefault, Route: d.route.name, Allowed: d.allow && limit == "", RateLimit: limit}}
	if d.allow {
		in.Policy.Authorization, in.Policy.AuthorizationKind = d.authz.name, d.authz.kind
	}
	if !d.allow || d.authz.kind == "audit" { // why it was (or would be) denied
		in.Policy.Reason = d.reason
	}
	a.decisions.Record(&in)
}

// Opaque reports whether the Server of port declares it opaque (its
// proxyProtocol): connections to it are not inspected.
func (a *Authorizer) Opaque(port uint16) bool {
	p := a.policy.Load()
	return p != nil && p.servers[port] != nil && p.servers[port].opaque
}

// TCP is the stage that closes a denied connection (opaque TCP). A port
// whose Server declares an HTTP protocol takes nothing but HTTP (server.
// decide): opaque bytes to it (a request the detection could not read in
// time, a peer's opaque session) would pass its routes, route
// authorizations and rate limit.
func (a *Authorizer) TCP(next transport.Handler) transport.Handler {
	return transport.HandlerFunc(func(ctx context.Context, c net.Conn) {
		m := transport.MetaFrom(ctx)
		port := m.TargetPort()
		d := a.decide(m, port, nil)
		a.count(tcp, port, d)
		a.logDecision(m, d, "connection")
		if !d.allow {
			c.Close()
			return
		}
		next.ServeConn(ctx, c)
	})
}
