package cli

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/local/run"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
)

func runCmd(dataDir *string) *cobra.Command {
	var o run.Options
	var upstreams []string
	cmd := &cobra.Command{
		Use:   "run --name NAME [--port PORT] [flags] (-- COMMAND [ARGS...] | --attach)",
		Short: "Start an application with its proxy, meshed and registered as a service",
		Long: `run starts COMMAND and a trellis-proxy next to it, registers the instance
with the local control plane as part of service --service (default --name),
and supervises both until Ctrl-C, when it stops them and removes everything
it set up. With --replicas N it starts N instances, NAME-0 … NAME-N-1. An
instance whose application or proxy exits is stopped and, by --restart
(default always), started again after a backoff; 'trellis get workloads'
shows its restarts.

The instance's identity is spiffe://<trust-domain>/ns/<namespace>/sa/<name>;
calls between meshed services use mutual TLS and carry it.

Transparent mode (root, and a control plane started as root): each
instance runs in its own network namespace on the control plane's bridge;
iptables sends its traffic through the proxy, and other services are
reached by name (emoji, emoji.default, emoji.default.svc.cluster.local) on
their service port. The application listens on --port.

Explicit mode (otherwise, or --mode explicit): the proxy listens on
loopback ports; instance i's application listens on 127.0.0.1:(--port + i);
each --upstream NAME:PORT gets a local port the application dials (the
proxy picks it, or NAME:PORT=LOCALPORT pins it); plain HTTP clients may
also use HTTP_PROXY, which is set.

Without --port the workload is a client only (a job, a load generator): it
serves no service, but it has its identity, calls over mutual TLS and is
registered, so 'trellis edges' and 'trellis stat --from' show its calls.

--attach meshes an application that runs already, or that something else
starts (explicit mode, one instance, no COMMAND): the proxy serves
127.0.0.1:--port as the service and registers it once the application
accepts connections (it says so while it waits); the application reaches
its upstreams on pinned local ports (--upstream NAME:PORT=LOCALPORT).

As root, the application runs as --user (default nobody) with no
capabilities and no way to gain any: it cannot read the control plane's
keys or use its API socket, change its interception rules, or become the
proxy's user. It must be able to execute COMMAND as that user (a binary
under a directory only root may enter will not start).

The application's environment tells it where everything is:
  PORT, LISTEN_ADDR   where to listen
  NAME_ADDR           host:port to dial for each --upstream (EMOJI_ADDR for emoji)
  HTTP_PROXY          (explicit mode) the outbound proxy
$PORT, $LISTEN_ADDR and $NAME_ADDR are also expanded in ARGS.`,
		Example: `  trellis run --name emoji --port 8080 --replicas 2 -- ./emoji-svc
  trellis run --name web --port 8080 --upstream emoji:8080 -- ./web --emoji '$EMOJI_ADDR'
  trellis run --name loadgen --upstream web:8080=9000 -- fortio load -qps 10 -t 0 http://127.0.0.1:9000/
  trellis run --name legacy --port 8080 --attach --upstream emoji:8080=9001`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() < 0 && len(args) > 0 {
				return fmt.Errorf("put the command after --: trellis run --name %s --port %d -- %s", o.Name, o.Port, args[0])
			}
			o.Command = args
			for _, u := range upstreams {
				up, err := run.ParseUpstream(u)
				if err != nil {
					return fmt.Errorf("--upstream: %w", err)
				}
				o.Upstreams = append(o.Upstreams, up)
			}
			if err := o.Validate(); err != nil { // the user's mistakes first
				return err
			}
			proxy, err := sibling(proxyBinary)
			if err != nil {
				return err
			}
			o.DataDir, o.ProxyExe = *dataDir, proxy
			o.Out, o.Err = cmd.OutOrStdout(), cmd.ErrOrStderr()
			o.Log = textLogger(0)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run.Run(ctx, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.Name, "name", "", "workload name (required); also the identity's service account")
	fs.StringVarP(&o.Namespace, "namespace", "n", "default", "namespace")
	fs.StringVar(&o.Service, "service", "", "service the instances serve (default: --name)")
	fs.IntVar(&o.Port, "port", 0, "service port the application serves (default: none, a client-only workload)")
	fs.BoolVar(&o.Attach, "attach", false, "mesh an application that runs already on 127.0.0.1:--port: the proxy only, no COMMAND (explicit mode)")
	fs.StringVar(&o.Protocol, "protocol", "", "protocol of the port: http (HTTP/1.1), http2 (h2c), grpc, tcp or opaque (default: detected; an HTTP/2 client reaches an HTTP/1.1 application either way)")
	fs.IntVar(&o.Replicas, "replicas", 1, "number of instances")
	fs.StringArrayVar(&upstreams, "upstream", nil, "NAME[.NAMESPACE]:PORT[=LOCALPORT] of a service the application calls; LOCALPORT pins its loopback port in explicit mode (repeatable)")
	fs.StringVar(&o.Mode, "mode", "auto", "auto (transparent when root and the control plane has a network), transparent or explicit")
	fs.StringVar(&o.ProxyLogLevel, "proxy-log-level", "warn", "log level of the proxies: debug, info, warn or error")
	fs.StringVar(&o.AccessLog, "access-log", "", "HTTP access log of the proxies, on their output: apache or json (default: none)")
	fs.StringVar(&o.TraceCollector, "trace-collector", "", "OTLP/gRPC receiver HOST:PORT the proxies export a span per request to, reachable from the instances (default: no tracing)")
	fs.StringArrayVar(&o.Env, "env", nil, "KEY=VALUE added to the application's environment (repeatable)")
	fs.StringVar(&o.Restart, "restart", run.RestartAlways, "when a replica's application or proxy exits: always restart it (after a backoff from 1s, doubling to 1m), on-failure (a non-zero exit), or never")
	fs.StringVar(&o.DefaultInboundPolicy, "default-inbound-policy", "", "who may call the instances: "+strings.Join(authz.Policies, ", ")+" (default: the control plane's --default-inbound-policy, else all-unauthenticated; all-authenticated admits meshed clients only)")
	fs.StringVar(&o.PortName, "port-name", "", "name of the application's port, by which a Server may select it (default: the --protocol, e.g. grpc)")
	fs.BoolVar(&o.RequireIdentity, "require-identity", false, "admit only meshed clients (mTLS from a peer proxy) on the application's port, whatever the inbound policy")
	fs.StringArrayVar(&o.ProbePaths, "probe-path", nil, "PATH of the application's health check: GETs of it from this host are allowed whatever the inbound policy, unless routes of the port's Server say otherwise (repeatable)")
	fs.BoolVar(&o.AllowUDP, "allow-udp", false, "transparent mode: let UDP leave the instances in plaintext (the mesh carries TCP only); by default only DNS to the control plane does, other UDP is refused")
	fs.StringVar(&o.User, "user", "", "as root: the user the application runs as, NAME|UID[:GROUP|GID], with no capabilities (default nobody; root keeps root, and lets the application read the mesh's keys)")
	cmd.MarkFlagRequired("name")
	return cmd
}
