// Package cli is the trellis-proxy command line: the proxy itself (the root
// command) and its helpers (init, version).
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/proxy/app"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// New returns the root command.
func New() *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis-proxy",
		Short: "The Trellis data-plane proxy: one next to every service instance",
		Long: `trellis-proxy sits next to one service instance. Its inbound listener
receives traffic for the instance; its outbound listener receives the
instance's own outgoing traffic. Both detect the protocol (HTTP/1, HTTP/2,
TLS, else opaque TCP), forward it, and record metrics served on the admin
address.

Traffic arrives transparently (iptables REDIRECT, see 'trellis-proxy init')
or explicitly: --upstream ports, the outbound port as an HTTP proxy
(HTTP_PROXY=http://127.0.0.1:4140), and --app-addr for inbound.

Every flag can also be set with an environment variable: --detect-timeout
is TRELLIS_PROXY_DETECT_TIMEOUT. Flags win over the environment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	finish := config.Flags(root.Flags())
	uid := -1
	root.Flags().IntVar(&uid, "run-as-uid", -1, "switch to this user and group ID before starting (trellis run's transparent mode)")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := finish() // also reads the environment, TRELLIS_PROXY_RUN_AS_UID too
		if err != nil {
			return fmt.Errorf("invalid configuration: %w", err)
		}
		if uid >= 0 {
			if err := runAs(uid); err != nil {
				return err
			}
		}
		return run(cmd.Context(), cfg)
	}
	root.AddCommand(buildinfo.Command(), initCmd())
	return root
}

func run(ctx context.Context, cfg *config.Config) error {
	log, err := buildinfo.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	p, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The first signal starts the drain; a second one ends the process at
	// once, as the default action does.
	context.AfterFunc(ctx, func() {
		stop()
		log.Info("stopping; a second SIGTERM or SIGINT ends the process at once")
	})
	return p.Run(ctx)
}
