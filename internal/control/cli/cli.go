// Package cli is the trellis-control command line: one subcommand per
// control-plane component. Each parses its flags into the component's
// options, and runs it until SIGTERM or SIGINT, then shuts it down
// gracefully.
package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/identity"
	"github.com/trellis-mesh/trellis/internal/control/plane"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/kube/auth"
	"github.com/trellis-mesh/trellis/internal/kube/injector"
	"github.com/trellis-mesh/trellis/internal/kube/mirror"
)

// New returns the root command.
func New() *cobra.Command {
	var logLevel, logFormat string
	root := &cobra.Command{
		Use:   "trellis-control",
		Short: "The Trellis control plane: every component as a subcommand",
		Long: `trellis-control runs the Trellis control-plane components. Each is a
subcommand: identity (the mesh's certificate authority), destination
(service discovery and workload registration over the embedded store),
injector (the Kubernetes admission webhook that meshes Pods), all, which
runs every component in one process, up, which is all with local mode's
defaults and bridge network (what 'trellis up' runs), and web, the
dashboard on its own in front of a read-only API.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "json", "log format: json or text")
	logger := func() (*slog.Logger, error) { return buildinfo.NewLogger(os.Stderr, logLevel, logFormat) }
	root.AddCommand(identityCmd(logger), destinationCmd(logger), allCmd(logger), upCmd(&logLevel, &logFormat), webCmd(), injectorCmd(logger), joinTokenCmd(), buildinfo.Command())
	return root
}

func identityCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var o identity.Options
	var proof, kubeconfig string
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Run the identity service: the certificate authority that issues proxy certificates",
		Long: `identity is the mesh's certificate authority. Every proxy generates a
private key in memory, sends a certificate signing request for its SPIFFE ID
(spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>) together with a
proof of identity, and receives a short-lived leaf certificate (24h by
default), which it renews at 70% of its lifetime. Proxies then authenticate
each other with mutual TLS 1.3.

The hierarchy is trust anchor (root) → issuer (intermediate) → leaf:

  --data-dir DIR     keeps a hierarchy generated on first start (ECDSA P-256,
                     one year each): trust-anchor.pem, trust-anchor-key.pem,
                     issuer.pem and issuer-key.pem, keys mode 0600. Give
                     proxies trust-anchor.pem.
  --trust-anchor-pem, --issuer-cert-pem, --issuer-key-pem
                     use your own hierarchy instead. It is refused, saying what
                     is wrong, if the issuer is not signed by the anchor, a
                     certificate is expired or not yet valid, the key does not
                     match the issuer certificate, or a CA certificate lacks
                     CA:TRUE or the certificate-signing key usage.

Proofs of identity are join tokens (--proof join-token, the default): signed
(Ed25519, --join-token-key-file), scoped to one identity, expiring, issued by
'trellis'. In Kubernetes (--proof serviceaccount) they are the Pods'
projected ServiceAccount tokens (audience identity.trellis.dev), checked with
a TokenReview through the API server (in-cluster, or --kubeconfig): a token
of ServiceAccount SA in namespace NS proves spiffe://<trust-domain>/ns/NS/sa/SA.
A request whose certificate signing request names anything but the requested
identity is refused with INVALID_ARGUMENT, a bad or expired token with
UNAUTHENTICATED, a token for another identity with PERMISSION_DENIED, and a
caller asking too often with RESOURCE_EXHAUSTED.

An expired issuer stops every proxy from renewing, a mesh-wide outage: the
service logs a warning when less than --issuer-expiry-warning remains and
exports identity_issuer_expiration_timestamp_seconds on --admin-addr /metrics
for alerting.

The service itself serves TLS with a certificate from its own issuer for
--server-identity, which proxies verify against the trust anchor. SIGTERM or
SIGINT stops it gracefully.`,
		Example: `  # local: generate a hierarchy on first start, keep it in /var/lib/trellis
  trellis-control identity --data-dir /var/lib/trellis/identity

  # your own hierarchy
  trellis-control identity --trust-anchor-pem ca.pem \
      --issuer-cert-pem issuer.pem --issuer-key-pem issuer-key.pem \
      --join-token-key-file join-token-key.pem

  # in a Kubernetes cluster, the hierarchy from a Secret's files
  trellis-control identity --proof serviceaccount --trust-anchor-pem /etc/trellis/ca.crt \
      --issuer-cert-pem /etc/trellis/issuer.crt --issuer-key-pem /etc/trellis/issuer.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			log = log.With("component", "identity")
			switch proof {
			case "join-token":
			case "serviceaccount":
				client, err := auth.Client(kubeconfig)
				if err != nil {
					return fmt.Errorf("--proof serviceaccount needs the Kubernetes API: %w", err)
				}
				o.Validator = &identity.ServiceAccountValidator{Reviewer: auth.TokenReviewer{Client: client}, TrustDomain: o.TrustDomain}
			default:
				return fmt.Errorf("--proof %q: join-token or serviceaccount", proof)
			}
			srv, err := identity.NewServer(o, log)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return srv.Run(ctx)
		},
	}
	o.Flags(cmd.Flags())
	cmd.Flags().StringVar(&proof, "proof", "join-token", "what proxies prove their identity with: join-token, or serviceaccount (Kubernetes, checked with TokenReview)")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "with --proof serviceaccount: the kubeconfig to reach the API server with (default: in-cluster)")
	return cmd
}

func injectorCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var o injector.Options
	cmd := &cobra.Command{
		Use:   "injector",
		Short: "Run the proxy injector: the mutating admission webhook that meshes Pods (Kubernetes)",
		Long: `injector is the mutating admission webhook the API server calls for every
Pod it creates. A Pod whose annotation trellis.dev/inject is "enabled" (or,
without one, whose namespace's is) gets the Trellis proxy: an iptables init
container and the proxy as a native sidecar, tuned by the Pod's
config.trellis.dev/* annotations; an invalid annotation refuses the Pod
with the annotation's name. Namespace annotations are read from the API
server (in-cluster, or --kubeconfig); its ServiceAccount needs get on
namespaces. It serves HTTPS on --addr (path /mutate) with the certificate
the webhook configuration's caBundle vouches for, and /ready and /live on
--admin-addr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			client, err := auth.Client(o.Kubeconfig)
			if err != nil {
				return fmt.Errorf("the injector needs the Kubernetes API: %w", err)
			}
			in, err := injector.New(o, client, log.With("component", "injector"))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return in.Run(ctx)
		},
	}
	o.Flags(cmd.Flags())
	return cmd
}

func allCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	return planeCmd(logger, "all", "Run every control-plane component in one process: identity, destination, DNS, store", false,
		`all runs the identity service, the destination service and workload
registry, the embedded store (one bbolt file in --data-dir), the optional
DNS server for service names (--dns-addr), and the local API socket the
trellis CLI uses, in one process, on one gRPC/TLS port (--addr). 'up'
adds local mode's network and defaults to it; see 'trellis-control identity --help' for the
certificate authority's flags.`)
}

func destinationCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var kube bool
	var kubeconfig string
	cmd := planeCmd(logger, "destination", "Run the destination service: service discovery and workload registration", true,
		`destination serves proxies the endpoints of every service (address,
weight, identity, protocol hint, metric labels) and their profiles as
streams, and registers the workloads proxies front, with leases
(--lease-ttl), over the embedded store in --data-dir. Each stream has a
bounded queue: one that falls behind is closed and the proxy reconnects and
resyncs. It serves TLS with a certificate from the CA in --data-dir (the
identity service's), and leaves certificate issuing to 'identity'.

With --kubernetes it mirrors the cluster into the store: every Service (its
ClusterIP and TCP ports) and every ready endpoint, with its ServiceAccount's
identity when its Pod runs the proxy, and the Gateway API HTTPRoutes and
GRPCRoutes attached to Services, whose status it writes (in-cluster, or
--kubeconfig; its ServiceAccount needs list and watch on services,
endpointslices, pods, httproutes and grpcroutes, and update on their
status). Proxies cannot register workloads then: a Service's endpoints are
the cluster's.`,
		func(o *plane.Options, log *slog.Logger) error {
			if !kube {
				return nil
			}
			cfg, err := auth.Config(kubeconfig)
			if err != nil {
				return fmt.Errorf("--kubernetes: %w", err)
			}
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("--kubernetes: %w", err)
			}
			gw, err := gwclient.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("--kubernetes: %w", err)
			}
			m := &mirror.Mirror{Client: client, Gateway: gw, TrustDomain: o.Identity.TrustDomain, Log: log.With("component", "mirror")}
			o.Sources = append(o.Sources, func(ctx context.Context, st store.Store) error { return m.Run(ctx, st) })
			o.NoRegistry = true // the cluster's EndpointSlices say who serves a Service
			return nil
		})
	cmd.Flags().BoolVar(&kube, "kubernetes", false, "serve a Kubernetes cluster: mirror its Services, EndpointSlices and Pods into the store")
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "with --kubernetes: the kubeconfig to reach the API server with (default: in-cluster)")
	return cmd
}

func planeCmd(logger func() (*slog.Logger, error), use, short string, noCertify bool, long string, extra ...func(*plane.Options, *slog.Logger) error) *cobra.Command {
	var o plane.Options
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			o.Identity.NoCertify = noCertify
			for _, f := range extra {
				if err := f(&o, log); err != nil {
					return err
				}
			}
			p, err := plane.New(o, log.With("component", use))
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return p.Run(ctx)
		},
	}
	o.Flags(cmd.Flags())
	return cmd
}
