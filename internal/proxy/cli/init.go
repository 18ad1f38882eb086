package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/proxy/iptables"
)

func initCmd() *cobra.Command {
	var cfg iptables.Config
	var cleanup bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Install (or with --cleanup remove) the iptables rules for transparent interception",
		Long: `init programs the nat table of the current network namespace so that every
TCP connection into it is redirected to the proxy's inbound port and every
connection out of it to the outbound port, except the proxy's own (matched
by its UID) and loopback traffic. It is idempotent: running it twice leaves
one copy of the rules. --cleanup removes exactly what init added.

It needs CAP_NET_ADMIN: run it as root, in the Kubernetes init container or
in the namespace 'trellis run' creates.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			if cleanup {
				if err := iptables.Cleanup(cmd.Context(), cfg, iptables.ExecRunner{}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "removed trellis iptables rules")
				return nil
			}
			if err := iptables.Install(cmd.Context(), cfg, iptables.ExecRunner{}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed trellis iptables rules: inbound -> :%d, outbound -> :%d, proxy uid %d\n", cfg.InboundPort, cfg.OutboundPort, cfg.ProxyUID)
			return nil
		},
	}
	cfg.BindFlags(cmd.Flags())
	cmd.Flags().BoolVar(&cleanup, "cleanup", false, "remove the rules init added instead of installing them")
	return cmd
}
