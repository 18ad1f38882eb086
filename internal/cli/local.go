package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/local/netns"
	"github.com/trellis-mesh/trellis/internal/local/up"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
)

func apiClient(dataDir string) *localapi.Client {
	return localapi.NewClient(filepath.Join(dataDir, localapi.SocketName))
}

func upCmd(dataDir *string) *cobra.Command {
	var o up.Options
	var detach bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the local control plane (identity, destination, DNS, store) in one process",
		Long: `up runs every control-plane component in one process: the identity
service (the mesh's certificate authority; a trust anchor and issuer are
created in the data directory on first start), the destination service and
workload registry, the embedded store, and the local API the trellis CLI
uses. State lives in the data directory and survives restarts.

As root it also creates the bridge network (--bridge trellis0,
--network-cidr 10.239.0.0/16) that 'trellis run' puts each instance on, in
its own network namespace, and answers service names (web, web.default,
web.default.svc.cluster.local) over DNS on the bridge's address. Without
root, instances run in explicit mode on loopback. Several control planes
run side by side on one host with their own data directories, bridges and
networks; a network that overlaps one of the host's is refused.

It runs in the foreground until SIGINT or SIGTERM ('trellis down' sends the
equivalent); with --detach it starts in the background, logging to
DATA_DIR/trellis.log, and returns once it serves.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("data-dir") {
				o.Plane.Identity.DataDir = *dataDir
			}
			if detach {
				return startDetached(cmd, o.Plane.Identity.DataDir)
			}
			level, _ := cmd.Flags().GetString("log-level")
			format, _ := cmd.Flags().GetString("log-format")
			log, err := buildinfo.NewLogger(os.Stderr, level, format)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			u, err := up.Start(ctx, o, log)
			if err != nil {
				return err
			}
			printStatus(cmd, u.Status())
			return u.Run(ctx)
		},
	}
	fs := cmd.Flags()
	o.Plane.Flags(fs)
	// The data directory is the root's --data-dir; the control port is
	// chosen for the network mode.
	fs.MarkHidden("data-dir")
	fs.MarkHidden("addr")
	fs.Lookup("admin-addr").DefValue = "127.0.0.1:9990"
	fs.Set("admin-addr", "127.0.0.1:9990")
	fs.MarkHidden("dns-addr")
	fs.StringVar(&o.Network, "network", "auto", "instance network: auto (a bridge when root), bridge, or none (explicit mode only)")
	o.Bridge.Flags(fs)
	fs.StringVar(&o.DefaultInboundPolicy, "default-inbound-policy", "", "the mesh's default inbound policy, which 'trellis run' gives its proxies unless its own flag says otherwise: "+strings.Join(authz.Policies, ", ")+" (default: all-unauthenticated)")
	fs.StringToStringVar(&o.NamespaceInboundPolicies, "namespace-inbound-policy", nil, "NAMESPACE=POLICY: the default inbound policy of a namespace's workloads, before the mesh's (repeatable, or comma-separated)")
	fs.IntVar(&o.ControlPort, "control-port", up.DefaultControlPort, "gRPC port of identity and destination (on the bridge address when bridged, else 127.0.0.1; 0 picks one)")
	fs.BoolVarP(&detach, "detach", "d", false, "run in the background and return once serving")
	fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.String("log-format", "text", "log format: json or text")
	return cmd
}

// startDetached re-runs `up` in the background and waits until it serves.
func startDetached(cmd *cobra.Command, dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var args []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name != "detach" {
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	logPath := filepath.Join(dataDir, "trellis.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	child := exec.Command(exe, append([]string{"up", "--data-dir", dataDir}, args...)...)
	child.Stdout, child.Stderr = logf, logf
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	api := apiClient(dataDir)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("the control plane exited (%v); see %s", err, logPath)
		case <-time.After(100 * time.Millisecond):
		}
		if st, err := api.Status(cmd.Context()); err == nil && st.PID == child.Process.Pid {
			printStatus(cmd, st)
			fmt.Fprintf(cmd.OutOrStdout(), "running in the background (pid %d, log %s); stop it with 'trellis down'\n", st.PID, logPath)
			return nil
		}
	}
	return fmt.Errorf("the control plane did not answer within 30s; see %s", logPath)
}

func printStatus(cmd *cobra.Command, st localapi.Status) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "control plane\t%s (pid %d)\n", st.Version, st.PID)
	fmt.Fprintf(w, "data directory\t%s\n", st.DataDir)
	fmt.Fprintf(w, "identity, destination\t%s (gRPC, TLS)\n", st.ControlAddr)
	fmt.Fprintf(w, "admin\thttp://%s/metrics\n", st.AdminAddr)
	fmt.Fprintf(w, "trust anchor\t%s\n", st.TrustAnchor)
	if st.DefaultInboundPolicy != "" {
		fmt.Fprintf(w, "inbound policy\t%s (the default of the proxies trellis run starts)\n", st.DefaultInboundPolicy)
	}
	for _, ns := range slices.Sorted(maps.Keys(st.NamespaceInboundPolicies)) {
		fmt.Fprintf(w, "inbound policy\t%s in namespace %s\n", st.NamespaceInboundPolicies[ns], ns)
	}
	if st.Network != "" {
		fmt.Fprintf(w, "network\t%s on %s (instances in their own network namespaces)\n", st.Network, st.Bridge)
		fmt.Fprintf(w, "DNS\t%s (*.svc.%s)\n", st.DNSAddr, st.ClusterDomain)
	} else {
		fmt.Fprintf(w, "network\tnone (instances run in explicit mode on loopback)\n")
	}
	w.Flush()
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
			printStatus(cmd, st)
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
