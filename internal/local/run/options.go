// Package run starts applications meshed in local mode — what `trellis
// run` does: for each replica, the application and a trellis-proxy next to
// it, registered with the control plane under the service's name. As root
// (and with a control plane that has a bridge network) each replica gets
// its own network namespace with transparent interception and service
// names in DNS; otherwise the proxy runs in explicit mode and the
// application is told, in its environment, where to send its traffic.
package run

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/proxy/authz"
)

// Options describe one `trellis run`.
type Options struct {
	// Name is the workload's name; replicas are NAME-0, NAME-1, ...; it is
	// also the service account of the identity.
	Name      string
	Namespace string
	// Service is the service the replicas serve (default Name).
	Service string
	// Port is the service port. In transparent mode every replica's
	// application listens on it in its own namespace; in explicit mode
	// replica i listens on Port+i on loopback. Zero: the workload is a
	// client only, registered (for its identity, edges and stat) but in
	// no service.
	Port     int
	Protocol string
	Replicas int
	// Upstreams are services the application calls ("name[.namespace]:port").
	Upstreams []Upstream
	// Command is the application's argv; $PORT, $LISTEN_ADDR and the
	// upstreams' $NAME_ADDR are expanded in it.
	Command []string
	// Attach runs the proxy only, for an application that runs already
	// (or is started by something else) on 127.0.0.1:Port: explicit
	// mode, one replica, no Command.
	Attach bool
	// Env is added to the application's environment.
	Env []string
	// Mode is "auto", "transparent" or "explicit".
	Mode string
	// Restart is the restart policy of a replica whose application or
	// proxy exits: RestartAlways (the default), RestartOnFailure or
	// RestartNever.
	Restart string
	// DefaultInboundPolicy is the proxies' default inbound policy (""
	// leaves the proxy's default, all-unauthenticated).
	DefaultInboundPolicy string
	// PortName names the application's port, for Servers that select it
	// by name ("": the Protocol, if one is declared).
	PortName string
	// RequireIdentity admits only meshed clients (mTLS from a peer proxy)
	// on the application's port, whatever the inbound policy.
	RequireIdentity bool
	// ProbePaths are the application's health checks: GETs of them from
	// this host are allowed whatever the policy, unless routes of the
	// port's Server say otherwise.
	ProbePaths []string
	// AllowUDP lets UDP leave a transparent-mode instance unencrypted;
	// otherwise only DNS to the control plane does, the rest is refused.
	AllowUDP bool
	// User is who the application runs as when trellis runs as root: NAME
	// or UID, optionally :GROUP or :GID (default DefaultUser); "root" keeps
	// root. Not root, the application runs as trellis's own user.
	User string
	// DataDir is the control plane's data directory.
	DataDir string
	// ProxyExe is the trellis-proxy binary.
	ProxyExe string
	// ProxyLogLevel is the proxies' log level.
	ProxyLogLevel string
	Out, Err      io.Writer
	Log           *slog.Logger

	// AccessLog is the proxies' HTTP access log format (apache or json,
	// on their stderr); "" is none.
	AccessLog string
	// TraceCollector is the OTLP/gRPC receiver (host:port) the proxies
	// export spans to; "" is no tracing.
	TraceCollector string
}

// Upstream is a service the application calls.
type Upstream struct {
	Name, Namespace string
	Port            int
	// LocalPort, if set, is the loopback port the application dials for
	// it in explicit mode (otherwise the proxy picks one and says which).
	LocalPort int
}

// EnvName is the environment variable that tells the application where
// the upstream is: EMOJI_ADDR for emoji.
func (u Upstream) EnvName() string {
	return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(u.Name)) + "_ADDR"
}

// ParseUpstream reads NAME[.NAMESPACE]:PORT[=LOCALPORT].
func ParseUpstream(s string) (Upstream, error) {
	host, p, ok := strings.Cut(s, ":")
	p, lp, pinned := strings.Cut(p, "=")
	port, err := strconv.Atoi(p)
	local := 0
	if err == nil && pinned {
		local, err = strconv.Atoi(lp)
		if err == nil && (local < 1 || local > 65535) {
			err = errors.New("not a port")
		}
	}
	if !ok || err != nil || port < 1 || port > 65535 {
		return Upstream{}, fmt.Errorf("upstream %q: want NAME[.NAMESPACE]:PORT[=LOCALPORT]", s)
	}
	name, ns, qualified := strings.Cut(host, ".")
	parts := []string{name}
	if qualified {
		parts = append(parts, ns)
	}
	for _, part := range parts {
		if errs := validation.IsDNS1123Label(part); len(errs) > 0 {
			return Upstream{}, fmt.Errorf("upstream %q: %q: %s", s, part, strings.Join(errs, "; "))
		}
	}
	return Upstream{Name: name, Namespace: ns, Port: port, LocalPort: local}, nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate checks the options, naming the flag at fault, and fills defaults.
func (o *Options) Validate() error {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Service == "" {
		o.Service = o.Name
	}
	for _, f := range []struct{ flag, v string }{{"--name", o.Name}, {"--namespace", o.Namespace}, {"--service", o.Service}} {
		if !dnsLabel.MatchString(f.v) || len(f.v) > 40 {
			return fmt.Errorf("%s %q: must be a DNS label (lower-case letters, digits and '-', at most 40 characters)", f.flag, f.v)
		}
	}
	switch {
	case o.Port < 0 || o.Port > 65535:
		return fmt.Errorf("--port %d: must be between 1 and 65535", o.Port)
	case o.Replicas < 1 || o.Replicas > 100:
		return fmt.Errorf("--replicas %d: must be between 1 and 100", o.Replicas)
	case o.Port+o.Replicas-1 > 65535:
		return fmt.Errorf("--port %d with --replicas %d: explicit mode needs ports up to %d", o.Port, o.Replicas, o.Port+o.Replicas-1)
	case o.Port == 0 && o.Protocol != "":
		return fmt.Errorf("--protocol %s without --port: a client-only workload serves no port", o.Protocol)
	case o.Port == 0 && o.Service != o.Name:
		return fmt.Errorf("--service %s without --port: a client-only workload serves no service", o.Service)
	case o.Attach && len(o.Command) > 0:
		return fmt.Errorf("--attach runs no command (the application runs already): drop %q", strings.Join(o.Command, " "))
	case o.Attach && o.Replicas != 1:
		return errors.New("--attach meshes one running application: --replicas must be 1")
	case o.Attach && o.Mode == "transparent":
		return errors.New("--attach is explicit mode: a running application cannot move into a network namespace")
	case !o.Attach && len(o.Command) == 0:
		return errors.New("no command: give the application after --, e.g. trellis run --name web --port 8080 -- ./web (or --attach for one that runs already)")
	}
	for _, u := range o.Upstreams {
		if u.LocalPort != 0 && o.Replicas > 1 {
			return fmt.Errorf("--upstream %s:%d=%d: a pinned local port serves one replica, not %d", u.Name, u.Port, u.LocalPort, o.Replicas)
		}
	}
	switch o.Protocol {
	case "", "http", "http2", "grpc", "tcp", "opaque":
	default:
		return fmt.Errorf("--protocol %q: must be http (HTTP/1.1), http2 (h2c), grpc, tcp or opaque", o.Protocol)
	}
	switch o.Restart {
	case "":
		o.Restart = RestartAlways
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("--restart %q: must be always, on-failure or never", o.Restart)
	}
	switch o.Mode {
	case "", "auto", "transparent", "explicit":
	default:
		return fmt.Errorf("--mode %q: must be auto, transparent or explicit", o.Mode)
	}
	if o.DefaultInboundPolicy != "" && !slices.Contains(authz.Policies, o.DefaultInboundPolicy) {
		return fmt.Errorf("--default-inbound-policy %q: must be one of %s", o.DefaultInboundPolicy, strings.Join(authz.Policies, ", "))
	}
	if (o.RequireIdentity || len(o.ProbePaths) > 0 || o.PortName != "") && o.Port == 0 {
		return errors.New("--require-identity, --probe-path and --port-name are about the application's port: give --port")
	}
	if o.PortName != "" {
		if errs := validation.IsValidPortName(o.PortName); len(errs) > 0 {
			return fmt.Errorf("--port-name %q: %s", o.PortName, strings.Join(errs, "; "))
		}
	}
	for _, p := range o.ProbePaths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, ", ?#") {
			return fmt.Errorf("--probe-path %q: must be a path such as /healthz (no query, no comma)", p)
		}
	}
	switch o.AccessLog {
	case "", "apache", "json":
	default:
		return fmt.Errorf("--access-log %q: must be apache or json", o.AccessLog)
	}
	if o.TraceCollector != "" {
		if _, p, err := net.SplitHostPort(o.TraceCollector); err != nil || p == "" {
			return fmt.Errorf("--trace-collector %q: want HOST:PORT of an OTLP/gRPC receiver", o.TraceCollector)
		}
	}
	return nil
}
