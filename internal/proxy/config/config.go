// Package config defines the proxy's typed configuration: every setting has a
// flag and a TRELLIS_PROXY_* environment variable, both parsed exactly once at
// start and validated before anything listens.
package config

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
)

// EnvPrefix is prepended to a flag's upper-cased, underscore-separated name to
// form its environment variable: --detect-timeout is TRELLIS_PROXY_DETECT_TIMEOUT.
const EnvPrefix = "TRELLIS_PROXY_"

// DefaultOpaquePorts are ports whose protocols are known not to be HTTP, or to
// be server-speaks-first: SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch, Memcached.
var DefaultOpaquePorts = []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211}

// Upstream is one explicit outbound route: the proxy listens on 127.0.0.1:LocalPort
// and sends every connection to Target.
type Upstream struct {
	Name      string
	LocalPort uint16
	Target    string // host:port
	// Identity, if set, is the SPIFFE ID of the Trellis proxy in front of
	// Target: traffic goes to it over mutual TLS.
	Identity string
}

// String renders the upstream in its flag form NAME=LOCALPORT:TARGET[@IDENTITY].
func (u Upstream) String() string {
	s := fmt.Sprintf("%s=%d:%s", u.Name, u.LocalPort, u.Target)
	if u.Identity != "" {
		s += "@" + u.Identity
	}
	return s
}

// ServicePort maps a service port to the port the application listens on.
type ServicePort struct {
	Port, TargetPort uint16
	Protocol         string
	// Name, if set, names the application's port (a Server may select it
	// by the name).
	Name string
}

// Config is every setting of the proxy.
type Config struct {
	// InboundAddr is where connections to the local application arrive (redirected
	// by iptables in transparent mode).
	InboundAddr string
	// OutboundAddr is where the application's outgoing connections arrive
	// (redirected by iptables) and where HTTP_PROXY-aware clients connect.
	OutboundAddr string
	// AdminAddr serves /metrics, /ready, /live and POST /shutdown.
	AdminAddr string
	// AppAddr is the local application for explicitly addressed inbound
	// connections. Redirected connections go to their original destination.
	AppAddr string
	// Upstreams are explicit outbound routes, one local listener each.
	Upstreams []Upstream
	// EndpointIdentities maps destinations ("IP" or "IP:PORT") that run a
	// Trellis proxy to its SPIFFE ID, standing in for discovery.
	EndpointIdentities map[string]string
	// OpaquePorts skip protocol detection: traffic to them is proxied as TCP.
	OpaquePorts map[uint16]bool
	// Authz is the inbound authorization: the default inbound policy, the
	// networks cluster-* policies admit, the ports that require identity.
	Authz authz.Config
	// TCPProbePorts are the application ports the admin server checks on
	// GET /probe/tcp/PORT: the injector turns a Pod's TCP probes into those,
	// since a TCP connect to an intercepted port reaches the proxy, not the
	// application, and would pass before the application listens.
	TCPProbePorts map[uint16]bool
	// DetectTimeout bounds how long the proxy waits for a client's first bytes
	// before treating the connection as opaque TCP.
	DetectTimeout time.Duration
	// ServerFirstDelay is how long a silent client may stay silent before the
	// proxy dials the target to learn whether the server speaks first.
	ServerFirstDelay time.Duration
	// ConnectTimeout bounds establishing a connection to a target.
	ConnectTimeout time.Duration
	// HeaderReadTimeout bounds reading one HTTP/1 request head (slowloris defence).
	HeaderReadTimeout time.Duration
	// MaxHeaderBytes bounds the size of one HTTP/1 request head.
	MaxHeaderBytes int
	// IdleTimeout closes client connections idle for this long between requests.
	IdleTimeout time.Duration
	// MaxConnections bounds the connections each listener serves at once,
	// and MaxConnectionsPerSource those of the inbound listener from one
	// client address; zero: derived from the file-descriptor limit.
	MaxConnections, MaxConnectionsPerSource int
	// PoolIdleTimeout closes pooled upstream connections idle for this long.
	PoolIdleTimeout time.Duration
	// ShutdownGracePeriod bounds draining in-flight requests on SIGTERM.
	ShutdownGracePeriod time.Duration
	// Identity is this proxy's SPIFFE ID; empty runs without mTLS.
	Identity string
	// IdentityAddr is the identity service (host:port) that certifies it.
	IdentityAddr string
	// IdentityTokenFile holds the proof of identity (a join token or a
	// ServiceAccount token), re-read before every request.
	IdentityTokenFile string
	// TrustAnchorsFile is the PEM bundle of trust anchors peers and the
	// identity service are verified against.
	TrustAnchorsFile string
	// TrustAnchorsPEM is the bundle itself, instead of a file (in
	// Kubernetes the injector passes it from the Pod's environment).
	TrustAnchorsPEM string
	// MeshPort is the inbound port of peer proxies, where mTLS connections go.
	MeshPort uint16
	// DestinationAddr is the control plane's destination service
	// (host:port): discovery of services and workload registration. Empty:
	// no discovery.
	DestinationAddr string
	// ClusterDomain: names under svc.<ClusterDomain> are mesh services,
	// never forwarded as addressed, even before discovery knows them.
	ClusterDomain string
	// Workload, if set, is the instance name this proxy registers (with
	// Service, WorkloadAddress and ServicePorts) and keeps a lease on.
	Workload string
	// Service is the logical service the workload serves.
	Service string
	// WorkloadAddress is the IP peers reach the workload on.
	WorkloadAddress string
	// ServicePorts map service ports to the application's ports.
	ServicePorts []ServicePort
	// WorkloadLabels are registered with the workload.
	WorkloadLabels map[string]string
	// Balance configures load balancing and failure accrual of discovered services.
	Balance balance.Config
	// FailFast is how long requests wait for a service without an
	// available endpoint before it fails fast.
	FailFast time.Duration
	// LogLevel is one of debug, info, warn, error.
	LogLevel string
	// LogFormat is json or text.
	LogFormat string
	// TapAddr serves tap (gRPC, mTLS) when the proxy has an identity, a
	// destination service, and either registers a workload (whose
	// registration tells the control plane the port) or ServeTap says so
	// (in Kubernetes the control plane learns the port from the Pod).
	TapAddr  string
	ServeTap bool
	// ReadyFile, if set, receives the addresses the proxy listens on (as
	// JSON, written whole) once it listens: a supervisor that lets it bind
	// port 0 learns the ports without a race.
	ReadyFile string
	// DisableHTTPMetrics leaves out the per-request HTTP series, only to
	// measure what they cost.
	DisableHTTPMetrics bool
	// AccessLog is the HTTP access log's format, apache or json; "" is off.
	AccessLog string
	// AccessLogOutput receives the access log; nil is stderr. It has no
	// flag: tests set it.
	AccessLogOutput io.Writer
	// TraceCollector is the OTLP/gRPC receiver (host:port) the proxy
	// exports a span per request to; "" is no tracing.
	TraceCollector string
	// TraceSampleRatio is the share of new traces that are recorded;
	// requests with a parent follow its decision.
	TraceSampleRatio float64
	// TraceServiceName is the service.name of the proxy's spans (default
	// the registered workload's service, else trellis-proxy).
	TraceServiceName string
}

// Flags binds every setting to fs with its default and documentation and
// returns a function that finishes parsing once fs has been parsed: it fills
// settings not given as flags from the environment and validates the result.
func Flags(fs *pflag.FlagSet) func() (*Config, error) {
	c := &Config{}
	var upstreams []string
	var upstreamsFile string
	var endpointIDs []string
	var meshPort int
	var servicePorts, workloadLabels []string
	var failureHTTP, failureGRPC string
	opaque := portsFlag{ports: DefaultOpaquePorts}
	var tcpProbes, requireIdentity portsFlag
	var clusterNetworks, probeNetworks, probePaths string
	fs.StringVar(&c.InboundAddr, "inbound-addr", "0.0.0.0:4143", "inbound listener: traffic to the local application")
	fs.StringVar(&c.OutboundAddr, "outbound-addr", "127.0.0.1:4140", "outbound listener: the application's outgoing traffic and HTTP_PROXY clients")
	fs.StringVar(&c.AdminAddr, "admin-addr", "0.0.0.0:4191", "admin server: /metrics, /ready, /live; POST /shutdown, /debug/pprof and /debug/decisions answer loopback clients only")
	fs.BoolVar(&c.DisableHTTPMetrics, "disable-http-metrics", false, "leave out the per-request HTTP metrics (request_total, response_*, route_*); only to measure their cost")
	fs.StringVar(&c.ReadyFile, "ready-file", "", "write the addresses the proxy listens on (JSON: inbound, outbound, admin, tap, upstreams) to this file once it listens, so that ports 0 can be asked for without a race; readiness is still GET /ready on the admin address")
	fs.StringVar(&c.TapAddr, "tap-addr", "0.0.0.0:4190", "tap server: live requests as gRPC over mTLS, served only to the control plane's identity (needs identity and destination-addr, and a registered workload unless tap-addr is given)")
	fs.StringVar(&c.AppAddr, "app-addr", "", "local application address for inbound connections that were not redirected (explicit mode), e.g. 127.0.0.1:8080")
	fs.StringArrayVar(&upstreams, "upstream", nil, "explicit outbound route NAME=LOCALPORT:HOST:PORT[@SPIFFE-ID]; listens on 127.0.0.1:LOCALPORT; with @SPIFFE-ID, HOST runs a Trellis proxy with that identity and traffic goes over mTLS (repeatable; env: comma-separated)")
	fs.StringVar(&upstreamsFile, "upstreams-file", "", "file of explicit outbound routes, one NAME=LOCALPORT:HOST:PORT[@SPIFFE-ID] per line ('#' starts a comment)")
	fs.StringArrayVar(&endpointIDs, "endpoint-identity", nil, "IP[:PORT]=SPIFFE-ID: destinations that run a Trellis proxy with that identity, reached over mTLS (repeatable; stands in for discovery)")
	fs.StringVar(&c.Identity, "identity", "", "this proxy's SPIFFE ID, e.g. spiffe://cluster.local/ns/default/sa/web; empty: no mTLS")
	fs.StringVar(&c.IdentityAddr, "identity-addr", "", "identity service address (host:port) that issues this proxy's certificate")
	fs.StringVar(&c.IdentityTokenFile, "identity-token-file", "", "file holding the proof of identity (join token or ServiceAccount token)")
	fs.StringVar(&c.TrustAnchorsFile, "trust-anchors", "", "PEM file of the mesh's trust anchors")
	fs.StringVar(&c.TrustAnchorsPEM, "trust-anchors-pem", "", "the mesh's trust anchors as PEM text, instead of trust-anchors (in a Pod: the environment variable TRELLIS_PROXY_TRUST_ANCHORS_PEM)")
	fs.IntVar(&meshPort, "mesh-port", 4143, "inbound port of peer proxies, where mTLS connections go")
	fs.StringVar(&c.DestinationAddr, "destination-addr", "", "control plane destination service (host:port): service discovery and workload registration; needs identity")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "names under svc.<this domain> are mesh services: a request to one discovery does not know (yet) waits for it like a service without endpoints (up to failfast-timeout), then fails with 503, instead of leaving the mesh as addressed; empty: every unknown name is forwarded as addressed")
	fs.StringVar(&c.Workload, "workload", "", "register this instance under this name (unique in its namespace, which is the identity's) and keep a lease on it; without service-port it is a client only, in no service")
	fs.StringVar(&c.Service, "service", "", "the service the registered workload serves (default: the workload name)")
	fs.StringVar(&c.WorkloadAddress, "workload-address", "", "IP peers reach the registered workload on (default: inbound-addr's host, if it is not a wildcard)")
	fs.StringArrayVar(&servicePorts, "service-port", nil, "[NAME:]PORT[=TARGETPORT][/PROTOCOL]: a port of the service and the port the application listens on for it (default TARGETPORT=PORT; PROTOCOL http (HTTP/1.1), http2 (h2c), grpc, tcp or opaque; NAME names the application's port, for Servers) (repeatable)")
	fs.StringArrayVar(&workloadLabels, "workload-label", nil, "KEY=VALUE label of the registered workload (repeatable)")
	fs.StringVar(&c.Balance.Accrual.Mode, "failure-accrual", balance.Consecutive, "when an endpoint is ejected: consecutive (failures in a row), success-rate (over a window), or off")
	fs.IntVar(&c.Balance.Accrual.Consecutive, "failure-accrual-consecutive", balance.DefaultConsecutive, "consecutive mode: failures in a row that eject an endpoint")
	fs.Float64Var(&c.Balance.Accrual.Threshold, "failure-accrual-success-rate", 0.8, "success-rate mode: eject an endpoint whose success rate falls below this")
	fs.DurationVar(&c.Balance.Accrual.Window, "failure-accrual-window", 30*time.Second, "success-rate mode: the window the rate is measured over")
	fs.IntVar(&c.Balance.Accrual.MinRequests, "failure-accrual-min-requests", 20, "success-rate mode: requests in the window before the rate counts")
	fs.DurationVar(&c.Balance.Accrual.BackoffMin, "failure-accrual-backoff-min", balance.DefaultBackoffMin, "first ejection's backoff (doubling, jittered, on each failed probation)")
	fs.DurationVar(&c.Balance.Accrual.BackoffMax, "failure-accrual-backoff-max", balance.DefaultBackoffMax, "longest ejection backoff")
	fs.DurationVar(&c.Balance.DefaultRTT, "ewma-default-rtt", balance.DefaultRTT, "latency assumed for an endpoint not yet measured (peak EWMA)")
	fs.DurationVar(&c.Balance.Decay, "ewma-decay", balance.DefaultDecay, "how fast latency measurements age (peak EWMA)")
	fs.StringVar(&failureHTTP, "failure-accrual-http-statuses", "500-599", "HTTP statuses that count as failures (e.g. 500-599 or 502,503,504)")
	fs.StringVar(&failureGRPC, "failure-accrual-grpc-codes", "4,13,14,15", "gRPC status codes that count as failures (default DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS)")
	fs.DurationVar(&c.FailFast, "failfast-timeout", 3*time.Second, "how long requests wait for a service with no available endpoint before it fails fast (503)")
	fs.Var(&opaque, "opaque-ports", "comma-separated ports proxied as TCP without protocol detection")
	fs.StringVar(&c.Authz.Default, "default-inbound-policy", authz.Policies[0], "who may reach the application when no policy says more: "+strings.Join(authz.Policies, ", ")+" (cluster-*: clients from cluster-networks; audit: everyone, counted)")
	fs.StringVar(&clusterNetworks, "cluster-networks", authz.DefaultClusterNetworks, "comma-separated client networks the cluster-* inbound policies admit")
	fs.StringVar(&probeNetworks, "probe-networks", "0.0.0.0/0,::/0", "comma-separated networks whose GET requests of probe-paths are allowed whatever the policy, unless the port's Server has routes")
	fs.StringVar(&probePaths, "probe-paths", "", "comma-separated paths of the application's health probes (Kubernetes HTTP probes, trellis run --probe-path)")
	fs.Var(&requireIdentity, "require-identity-inbound-ports", "comma-separated application ports whose clients must have a mesh identity (mTLS from a peer proxy), whatever the default inbound policy")
	fs.Var(&tcpProbes, "tcp-probe-ports", "comma-separated application ports the admin server's GET /probe/tcp/PORT checks by connecting to them (Kubernetes TCP probes, rewritten by the injector)")
	fs.DurationVar(&c.DetectTimeout, "detect-timeout", 10*time.Second, "how long to wait for a client's first bytes before treating the connection as opaque TCP")
	fs.DurationVar(&c.ServerFirstDelay, "server-first-delay", 100*time.Millisecond, "how long a silent client may wait before the proxy dials the target to see if the server speaks first (0 disables)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", time.Second, "timeout for connecting to a target")
	fs.DurationVar(&c.HeaderReadTimeout, "header-read-timeout", 10*time.Second, "maximum time to read one HTTP/1 request head")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", 64<<10, "maximum size of one HTTP/1 request head in bytes")
	fs.IntVar(&c.MaxConnections, "max-connections", 0, "connections each listener serves at once; more are closed as accepted (0: a quarter of the file-descriptor limit)")
	fs.IntVar(&c.MaxConnectionsPerSource, "max-connections-per-source", 0, "inbound connections served at once from one client address (0: a quarter of --max-connections)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 120*time.Second, "close client connections idle this long between requests")
	fs.DurationVar(&c.PoolIdleTimeout, "pool-idle-timeout", 10*time.Second, "close pooled upstream connections idle this long")
	fs.DurationVar(&c.ShutdownGracePeriod, "shutdown-grace-period", 120*time.Second, "on SIGTERM, how long in-flight requests and streams may take to finish")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.AccessLog, "access-log", "", "HTTP access log on stderr, one line per request: apache or json (default: none)")
	fs.StringVar(&c.TraceCollector, "trace-collector", "", "OTLP/gRPC trace receiver (host:port) to export a span per HTTP request to (default: no tracing)")
	fs.Float64Var(&c.TraceSampleRatio, "trace-sample-ratio", 1, "share of new traces to record, 0 to 1; requests with a parent follow its sampling decision")
	fs.StringVar(&c.TraceServiceName, "trace-service-name", "", "service.name of the proxy's spans (default: the registered workload's service, else trellis-proxy)")

	return func() (*Config, error) {
		if err := applyEnv(fs, os.LookupEnv); err != nil {
			return nil, err
		}
		if upstreamsFile != "" {
			b, err := os.ReadFile(upstreamsFile)
			if err != nil {
				return nil, fmt.Errorf("upstreams-file: %w", err)
			}
			for i, line := range strings.Split(string(b), "\n") {
				if j := strings.IndexByte(line, '#'); j >= 0 {
					line = line[:j]
				}
				if line = strings.TrimSpace(line); line == "" {
					continue
				}
				u, err := ParseUpstream(line)
				if err != nil {
					return nil, fmt.Errorf("upstreams-file %s line %d: %w", upstreamsFile, i+1, err)
				}
				c.Upstreams = append(c.Upstreams, u)
			}
		}
		for _, s := range upstreams {
			u, err := ParseUpstream(s)
			if err != nil {
				return nil, fmt.Errorf("upstream: %w", err)
			}
			c.Upstreams = append(c.Upstreams, u)
		}
		c.EndpointIdentities = map[string]string{}
		for _, e := range endpointIDs {
			addr, id, ok := strings.Cut(e, "=")
			if !ok || addr == "" {
				return nil, fmt.Errorf("endpoint-identity %q: want IP[:PORT]=SPIFFE-ID", e)
			}
			if err := checkEndpoint(addr); err != nil {
				return nil, fmt.Errorf("endpoint-identity %q: %w", e, err)
			}
			if err := checkIdentity(id); err != nil {
				return nil, fmt.Errorf("endpoint-identity %q: %w", e, err)
			}
			c.EndpointIdentities[addr] = id
		}
		for _, sp := range servicePorts {
			p, err := ParseServicePort(sp)
			if err != nil {
				return nil, fmt.Errorf("service-port: %w", err)
			}
			if p.Name != "" && slices.ContainsFunc(c.ServicePorts, func(q ServicePort) bool { return q.Name == p.Name }) {
				return nil, fmt.Errorf("service-port %q: the name %s is given to another port too", sp, p.Name)
			}
			c.ServicePorts = append(c.ServicePorts, p)
		}
		var err error
		if c.Balance.Failures.HTTP, err = codeSet(failureHTTP, 100, 599); err != nil {
			return nil, fmt.Errorf("failure-accrual-http-statuses %q: %w", failureHTTP, err)
		}
		if c.Balance.Failures.GRPC, err = codeSet(failureGRPC, 1, 16); err != nil {
			return nil, fmt.Errorf("failure-accrual-grpc-codes %q: %w", failureGRPC, err)
		}
		c.WorkloadLabels = map[string]string{}
		for _, l := range workloadLabels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("workload-label %q: want KEY=VALUE", l)
			}
			c.WorkloadLabels[k] = v
		}
		if meshPort < 1 || meshPort > 65535 {
			return nil, fmt.Errorf("mesh-port %d: not a port", meshPort)
		}
		c.MeshPort = uint16(meshPort)
		c.OpaquePorts = opaque.set()
		c.ServeTap = fs.Changed("tap-addr")
		c.TCPProbePorts = tcpProbes.set()
		c.Authz.RequireIdentity = requireIdentity.set()
		if c.Authz.ClusterNetworks, err = parseNetworks("cluster-networks", clusterNetworks); err != nil {
			return nil, err
		}
		if c.Authz.ProbeNetworks, err = parseNetworks("probe-networks", probeNetworks); err != nil {
			return nil, err
		}
		for _, p := range strings.Split(probePaths, ",") {
			if p = strings.TrimSpace(p); p != "" {
				if !strings.HasPrefix(p, "/") {
					return nil, fmt.Errorf("probe-paths %q: %q is not a path such as /healthz", probePaths, p)
				}
				c.Authz.ProbePaths = append(c.Authz.ProbePaths, p)
			}
		}
		if err := c.Authz.Check(); err != nil {
			return nil, err
		}
		if err := c.Validate(); err != nil {
			return nil, err
		}
		return c, nil
	}
}

// applyEnv sets every flag not given on the command line from its environment
// variable, if present. StringArray flags take a comma-separated list.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		name := EnvName(f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if f.Value.Type() == "stringArray" {
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					if e := fs.Set(f.Name, item); e != nil {
						err = fmt.Errorf("%s: %w", name, e)
						return
					}
				}
			}
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}

// EnvName is the environment variable that sets the flag named flag.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ParseUpstream parses NAME=LOCALPORT:HOST:PORT[@SPIFFE-ID].
func ParseUpstream(s string) (Upstream, error) {
	var id string
	if i := strings.Index(s, "@"); i >= 0 {
		s, id = s[:i], s[i+1:]
		if err := checkIdentity(id); err != nil {
			return Upstream{}, fmt.Errorf("%q: %w", s+"@"+id, err)
		}
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Upstream{}, fmt.Errorf("%q: want NAME=LOCALPORT:HOST:PORT", s)
	}
	portStr, target, ok := strings.Cut(rest, ":")
	if !ok {
		return Upstream{}, fmt.Errorf("%q: want NAME=LOCALPORT:HOST:PORT", s)
	}
	port, err := parsePort(portStr)
	if portStr == "0" {
		port, err = 0, nil // any free port: see --ready-file
	}
	if err != nil {
		return Upstream{}, fmt.Errorf("%q: local port: %w", s, err)
	}
	if err := checkHostPort(target); err != nil {
		return Upstream{}, fmt.Errorf("%q: target: %w", s, err)
	}
	return Upstream{Name: name, LocalPort: port, Target: target, Identity: id}, nil
}

func checkIdentity(s string) error {
	if _, err := identity.Parse(s); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// checkEndpoint accepts an IP address or IP:PORT.
func checkEndpoint(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if _, err := netip.ParseAddrPort(s); err != nil {
		return fmt.Errorf("%q is neither IP nor IP:PORT", s)
	}
	return nil
}

// Validate checks every setting and names the first bad one.
func (c *Config) Validate() error {
	for _, a := range []struct{ name, v string }{
		{"inbound-addr", c.InboundAddr}, {"outbound-addr", c.OutboundAddr}, {"admin-addr", c.AdminAddr},
	} {
		if err := checkListenAddr(a.v); err != nil {
			return fmt.Errorf("%s %q: %w", a.name, a.v, err)
		}
	}
	if c.AppAddr != "" {
		if err := checkHostPort(c.AppAddr); err != nil {
			return fmt.Errorf("app-addr %q: %w", c.AppAddr, err)
		}
	}
	seen := map[uint16]string{}
	names := map[string]bool{}
	for _, u := range c.Upstreams {
		if other, dup := seen[u.LocalPort]; dup && u.LocalPort != 0 {
			return fmt.Errorf("upstream %s: local port %d already used by upstream %s", u.Name, u.LocalPort, other)
		}
		if names[u.Name] {
			return fmt.Errorf("upstream %s: name used twice", u.Name)
		}
		seen[u.LocalPort], names[u.Name] = u.Name, true
	}
	for _, d := range []struct {
		name   string
		v      time.Duration
		zeroOK bool
	}{
		{"detect-timeout", c.DetectTimeout, false},
		{"server-first-delay", c.ServerFirstDelay, true},
		{"connect-timeout", c.ConnectTimeout, false},
		{"header-read-timeout", c.HeaderReadTimeout, false},
		{"idle-timeout", c.IdleTimeout, false},
		{"pool-idle-timeout", c.PoolIdleTimeout, false},
		{"shutdown-grace-period", c.ShutdownGracePeriod, true},
	} {
		if d.v < 0 || (d.v == 0 && !d.zeroOK) {
			return fmt.Errorf("%s %v: must be positive", d.name, d.v)
		}
	}
	if c.MaxConnections < 0 || c.MaxConnectionsPerSource < 0 {
		return fmt.Errorf("max-connections %d, max-connections-per-source %d: must not be negative", c.MaxConnections, c.MaxConnectionsPerSource)
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > 1<<20 {
		return fmt.Errorf("max-header-bytes %d: must be between 1024 and 1048576", c.MaxHeaderBytes)
	}
	if err := c.validateIdentity(); err != nil {
		return err
	}
	if err := c.validateWorkload(); err != nil {
		return err
	}
	if err := c.Balance.Validate(); err != nil {
		return err
	}
	// Zero would silently mean the default: "never eject" is a mode.
	if a := c.Balance.Accrual; a.Consecutive == 0 || a.Threshold == 0 || a.Window == 0 {
		return errors.New("failure-accrual-consecutive, -success-rate and -window must be above 0 (--failure-accrual off never ejects)")
	}
	if c.FailFast <= 0 {
		return fmt.Errorf("failfast-timeout %v: must be positive", c.FailFast)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log-level %q: must be debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("log-format %q: must be json or text", c.LogFormat)
	}
	return c.validateObservability()
}

// validateObservability checks the access log and tracing settings.
func (c *Config) validateObservability() error {
	switch c.AccessLog {
	case "", "apache", "json":
	default:
		return fmt.Errorf("access-log %q: must be apache or json (or empty: no access log)", c.AccessLog)
	}
	if c.TraceCollector != "" {
		if err := checkHostPort(c.TraceCollector); err != nil {
			return fmt.Errorf("trace-collector %q: %w", c.TraceCollector, err)
		}
	}
	if math.IsNaN(c.TraceSampleRatio) || c.TraceSampleRatio < 0 || c.TraceSampleRatio > 1 {
		return fmt.Errorf("trace-sample-ratio %v: must be between 0 and 1", c.TraceSampleRatio)
	}
	if c.TraceServiceName == "" {
		c.TraceServiceName = c.Service // set when a workload serves a service
	}
	return nil
}

// validateWorkload checks discovery and registration settings, filling in
// the defaults that depend on other settings.
func (c *Config) validateWorkload() error {
	if strings.ContainsAny(c.ClusterDomain, " /:") || strings.HasPrefix(c.ClusterDomain, ".") {
		return fmt.Errorf("cluster-domain %q: not a DNS domain", c.ClusterDomain)
	}
	if c.DestinationAddr != "" {
		if c.Identity == "" {
			return errors.New("destination-addr needs identity: the control plane is reached over mTLS")
		}
		if err := checkHostPort(c.DestinationAddr); err != nil {
			return fmt.Errorf("destination-addr %q: %w", c.DestinationAddr, err)
		}
	}
	if c.Workload == "" {
		for name, set := range map[string]bool{"service": c.Service != "", "workload-address": c.WorkloadAddress != "", "service-port": len(c.ServicePorts) > 0, "workload-label": len(c.WorkloadLabels) > 0} {
			if set {
				return fmt.Errorf("%s is set but workload is not: set workload to register an instance", name)
			}
		}
		return nil
	}
	if c.DestinationAddr == "" {
		return errors.New("workload needs destination-addr: the control plane it registers with")
	}
	switch {
	case len(c.ServicePorts) == 0 && c.Service != "":
		return fmt.Errorf("service %q needs service-port: a workload without service ports is a client only", c.Service)
	case len(c.ServicePorts) > 0 && c.Service == "":
		c.Service = c.Workload
	}
	if c.WorkloadAddress == "" {
		host, _, _ := net.SplitHostPort(c.InboundAddr)
		if a, err := netip.ParseAddr(host); err != nil || a.IsUnspecified() {
			return fmt.Errorf("workload-address is required when inbound-addr %q listens on every address", c.InboundAddr)
		}
		c.WorkloadAddress = host
	}
	if _, err := netip.ParseAddr(c.WorkloadAddress); err != nil {
		return fmt.Errorf("workload-address %q: not an IP address", c.WorkloadAddress)
	}
	return nil
}

// codeSet parses "a,b,c-d" into a set of numbers within [lo, hi].
func codeSet(s string, lo, hi int) (map[int]bool, error) {
	set := map[int]bool{}
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		from, to, isRange := strings.Cut(item, "-")
		a, err := strconv.Atoi(from)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(to)
		}
		if err != nil || a < lo || b > hi || a > b {
			return nil, fmt.Errorf("%q: want numbers or ranges between %d and %d", item, lo, hi)
		}
		for n := a; n <= b; n++ {
			set[n] = true
		}
	}
	return set, nil
}

// ParseServicePort parses PORT[=TARGETPORT][/PROTOCOL].
func ParseServicePort(s string) (ServicePort, error) {
	name, spec, named := strings.Cut(s, ":")
	if !named {
		name, spec = "", s
	} else if err := checkPortName(name); err != nil {
		return ServicePort{}, fmt.Errorf("%q: %w", s, err)
	}
	spec, proto, _ := strings.Cut(spec, "/")
	switch proto {
	case "", "http", "http2", "grpc", "tcp", "opaque":
	default:
		return ServicePort{}, fmt.Errorf("%q: protocol %q must be http (HTTP/1.1), http2 (h2c), grpc, tcp or opaque", s, proto)
	}
	ps, ts, hasTarget := strings.Cut(spec, "=")
	port, err := parsePort(ps)
	if err != nil {
		return ServicePort{}, fmt.Errorf("%q: %w", s, err)
	}
	target := port
	if hasTarget {
		if target, err = parsePort(ts); err != nil {
			return ServicePort{}, fmt.Errorf("%q: target port: %w", s, err)
		}
	}
	return ServicePort{Port: port, TargetPort: target, Protocol: proto, Name: name}, nil
}

// portName is the shape of a port's name (IANA service names, as
// Kubernetes' container port names).
var portName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// checkPortName says what makes name unfit to name a port (Kubernetes'
// IsValidPortName, which the proxy does not link).
func checkPortName(name string) error {
	if !portName.MatchString(name) || len(name) > 15 || !strings.ContainsAny(name, "abcdefghijklmnopqrstuvwxyz") {
		return fmt.Errorf("port name %q must be at most 15 lower-case letters, digits and '-', with a letter, starting and ending with a letter or digit", name)
	}
	return nil
}

// validateIdentity checks that mTLS settings come complete: a proxy that
// talks mTLS to peers needs its own certificate.
func (c *Config) validateIdentity() error {
	set := map[string]string{"identity": c.Identity, "identity-addr": c.IdentityAddr, "identity-token-file": c.IdentityTokenFile,
		"trust-anchors": c.TrustAnchorsFile + c.TrustAnchorsPEM}
	if c.TrustAnchorsFile != "" && c.TrustAnchorsPEM != "" {
		return errors.New("trust-anchors and trust-anchors-pem are both set: give one")
	}
	if c.Identity == "" {
		for name, v := range set {
			if v != "" {
				return fmt.Errorf("%s is set but identity is not: set identity to this proxy's SPIFFE ID", name)
			}
		}
		for _, u := range c.Upstreams {
			if u.Identity != "" {
				return fmt.Errorf("upstream %s names a peer identity, but this proxy has none: set identity", u.Name)
			}
		}
		if len(c.EndpointIdentities) > 0 {
			return errors.New("endpoint-identity needs this proxy to have an identity: set identity")
		}
		return nil
	}
	if err := checkIdentity(c.Identity); err != nil {
		return fmt.Errorf("identity %q: %w", c.Identity, err)
	}
	for _, name := range []string{"identity-addr", "identity-token-file", "trust-anchors"} {
		if set[name] == "" {
			return fmt.Errorf("%s is required with identity", name)
		}
	}
	if c.TrustAnchorsPEM != "" {
		if b, _ := pem.Decode([]byte(c.TrustAnchorsPEM)); b == nil {
			return errors.New("trust-anchors-pem: no PEM block in it")
		}
	}
	if err := checkHostPort(c.IdentityAddr); err != nil {
		return fmt.Errorf("identity-addr %q: %w", c.IdentityAddr, err)
	}
	return nil
}

// checkListenAddr accepts host:port where port 0 picks a free port.
func checkListenAddr(s string) error {
	if host, port, err := net.SplitHostPort(s); err == nil && port == "0" {
		return checkHostPort(net.JoinHostPort(host, "1"))
	}
	return checkHostPort(s)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
			return fmt.Errorf("invalid host %q", host)
		}
	}
	_, err = parsePort(port)
	return err
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return uint16(n), nil
}

// portsFlag is a comma-separated port list flag.
type portsFlag struct{ ports []uint16 }

// set is the ports as a set.
func (p *portsFlag) set() map[uint16]bool {
	m := make(map[uint16]bool, len(p.ports))
	for _, n := range p.ports {
		m[n] = true
	}
	return m
}

func (p *portsFlag) String() string {
	s := make([]string, len(p.ports))
	for i, v := range p.ports {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *portsFlag) Set(v string) error {
	p.ports = nil
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := parsePort(f)
		if err != nil {
			return err
		}
		p.ports = append(p.ports, n)
	}
	if len(p.ports) == 0 && strings.TrimSpace(v) != "" {
		return errors.New("no ports")
	}
	return nil
}

func (p *portsFlag) Type() string { return "ports" }

// parseNetworks parses the comma-separated networks of flag.
func parseNetworks(flag, value string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, n := range strings.Split(value, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %q is not a network such as 10.0.0.0/8", flag, value, n)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
