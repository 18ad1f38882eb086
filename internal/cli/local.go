package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/local/netns"
)

func apiClient(dataDir string) *localapi.Client {
	return localapi.NewClient(filepath.Join(dataDir, localapi.SocketName))
}

func upCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "up [flags]",
		Short: "Start the local control plane (identity, destination, DNS, store) in one process",
		Long: `up starts the local control plane: it runs 'trellis-control up' (found
beside this binary, else on PATH) with the same flags, so the control
plane's code lives in its own binary. 'trellis up --help' lists them.`,
		// The flags are trellis-control's: it parses them (and --help).
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := sibling(controlBinary)
			if err != nil {
				return err
			}
			return syscall.Exec(exe, append([]string{controlBinary, "up"}, args...), os.Environ())
		},
	}
}

func downCmd(dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the local control plane and remove its network",
		Long: `down asks the control plane of the data directory to stop and waits for it.
As root it then removes what that control plane's network left behind (a
crashed 'trellis up', 'trellis run' or 'trellis demo'): the network
namespaces no process lives in, and the bridge once none is left. Instances
still running keep their network and serve from what their proxies know;
the next 'trellis up' of the same data directory adopts them. Nothing of
another data directory's network is touched. The data directory is kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api := apiClient(*dataDir)
			st, err := api.Status(cmd.Context())
			switch {
			case errors.Is(err, localapi.ErrNotRunning):
				fmt.Fprintln(cmd.OutOrStdout(), "no control plane was running")
			case err != nil:
				return err
			default:
				if err := api.Shutdown(cmd.Context()); err != nil {
					return err
				}
				// Wait for the process itself, which removes its network last.
				deadline := time.Now().Add(60 * time.Second)
				for syscall.Kill(st.PID, 0) == nil {
					if time.Now().After(deadline) {
						return fmt.Errorf("the control plane (pid %d) did not stop within 60s", st.PID)
					}
					time.Sleep(100 * time.Millisecond)
				}
				fmt.Fprintln(cmd.OutOrStdout(), "control plane stopped")
			}
			if os.Geteuid() != 0 {
				return nil
			}
			dir, err := filepath.Abs(*dataDir)
			if err != nil {
				return err
			}
			for _, bridge := range netns.Bridges(dir) {
				live, err := netns.ReleaseBridge(context.WithoutCancel(cmd.Context()), bridge)
				if err != nil {
					return err
				}
				if live > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "bridge %s kept: %d instance(s) still run on it (stop their 'trellis run')\n", bridge, live)
				}
			}
			return nil
		},
	}
}

func statusCmd(dataDir *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the local control plane and what is registered with it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("--output %q: must be json (or none, for a table)", output)
			}
			api := apiClient(*dataDir)
			st, err := api.Status(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			st.WriteTable(cmd.OutOrStdout())
			svcs, err := api.List(cmd.Context(), resources.KindService, "")
			if err != nil {
				return err
			}
			wls, err := api.List(cmd.Context(), resources.KindWorkload, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "services\t%d\nworkloads\t%d\nup since\t%s\n", len(svcs), len(wls), st.Started.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json: the control plane's status as JSON (its addresses, network, gateway), for scripts")
	return cmd
}
