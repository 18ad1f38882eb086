// Package cli is the trellis-control command line: one subcommand per
// control-plane component. Each parses its flags into the component's
// options, and runs it until SIGTERM or SIGINT, then shuts it down
// gracefully.
package cli

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/identity"
)

// New returns the root command.
func New() *cobra.Command {
	var logLevel, logFormat string
	root := &cobra.Command{
		Use:   "trellis-control",
		Short: "The Trellis control plane: every component as a subcommand",
		Long: `trellis-control runs the Trellis control-plane components. Each is a
subcommand; today there is identity, the mesh's certificate authority.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&logFormat, "log-format", "json", "log format: json or text")
	logger := func() (*slog.Logger, error) { return buildinfo.NewLogger(os.Stderr, logLevel, logFormat) }
	root.AddCommand(identityCmd(logger), joinTokenCmd(), buildinfo.Command())
	return root
}

func identityCmd(logger func() (*slog.Logger, error)) *cobra.Command {
	var o identity.Options
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

Proofs of identity are join tokens: signed (Ed25519, --join-token-key-file),
scoped to one identity, expiring, issued by 'trellis'. (Kubernetes
ServiceAccount tokens, checked with TokenReview, come with Kubernetes mode.)
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
      --join-token-key-file join-token-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logger()
			if err != nil {
				return err
			}
			log = log.With("component", "identity")
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
	return cmd
}
