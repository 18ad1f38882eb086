package cli

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/local/up"
	"github.com/trellis-mesh/trellis/internal/proxy/authz"
)

// upCmd is local mode's control plane, which `trellis up` runs.
func upCmd(logLevel, logFormat *string) *cobra.Command {
	var o up.Options
	var detach bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the local control plane (what 'trellis up' starts): every component, and the bridge network as root",
		Long: `up runs every control-plane component in one process: the identity
service (the mesh's certificate authority; a trust anchor and issuer are
created in the data directory on first start), the destination service and
workload registry, the embedded store, the metrics store, and the local API
the trellis CLI uses. State lives in the data directory (--data-dir, else
$TRELLIS_DATA_DIR, else /var/lib/trellis as root or ~/.trellis) and
survives restarts. 'trellis up' runs this command with its own flags.

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
			if detach {
				return startDetached(cmd, o.Plane.Identity.DataDir)
			}
			o.Plane.Web.AnyPort = !cmd.Flags().Changed("web-addr")
			if !cmd.Flags().Changed("log-format") {
				*logFormat = "text"
			}
			log, err := buildinfo.NewLogger(os.Stderr, *logLevel, *logFormat)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			u, err := up.Start(ctx, o, log)
			if err != nil {
				return err
			}
			u.Status().WriteTable(cmd.OutOrStdout())
			return u.Run(ctx)
		},
	}
	fs := cmd.Flags()
	o.Plane.Flags(fs)
	// Local mode's defaults: its data directory, the admin port and the
	// dashboard's (set as defaults, so Changed still says what was given).
	for name, value := range map[string]string{"data-dir": localapi.DataDir(), "admin-addr": "127.0.0.1:9990", "web-addr": "127.0.0.1:50750"} {
		f := fs.Lookup(name)
		f.DefValue = value
		f.Value.Set(value)
	}
	fs.MarkHidden("addr")
	fs.MarkHidden("dns-addr")
	fs.StringVar(&o.Network, "network", "auto", "instance network: auto (a bridge when root), bridge, or none (explicit mode only)")
	o.Bridge.Flags(fs)
	fs.StringVar(&o.DefaultInboundPolicy, "default-inbound-policy", "", "the mesh's default inbound policy, which 'trellis run' gives its proxies unless its own flag says otherwise: "+strings.Join(authz.Policies, ", ")+" (default: all-unauthenticated)")
	fs.StringToStringVar(&o.NamespaceInboundPolicies, "namespace-inbound-policy", nil, "NAMESPACE=POLICY: the default inbound policy of a namespace's workloads, before the mesh's (repeatable, or comma-separated)")
	fs.IntVar(&o.ControlPort, "control-port", up.DefaultControlPort, "gRPC port of identity and destination (on the bridge address when bridged, else 127.0.0.1; 0 picks one)")
	fs.BoolVarP(&detach, "detach", "d", false, "run in the background and return once serving")
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
	// The child gets this process's own arguments (lists and maps as they
	// were written), less the detach flag, and its environment.
	var args []string
	for _, a := range os.Args[1:] {
		if a != "-d" && a != "--detach" && !strings.HasPrefix(a, "--detach=") {
			args = append(args, a)
		}
	}
	logPath := filepath.Join(dataDir, "trellis.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	child := exec.Command(exe, args...)
	child.Stdout, child.Stderr = logf, logf
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	st, _, err := localapi.Launch(cmd.Context(), child, dataDir, 60*time.Second, logPath)
	if err != nil {
		return err
	}
	st.WriteTable(cmd.OutOrStdout())
	fmt.Fprintf(cmd.OutOrStdout(), "running in the background (pid %d, log %s); stop it with 'trellis down'\n", st.PID, logPath)
	return nil
}
