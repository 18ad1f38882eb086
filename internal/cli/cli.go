// Package cli is the trellis command line: local mode (up, down, status,
// run, demo), resources (apply, get, delete), and the hidden commands the
// binary runs itself as (proxy, demo-app), so that one binary is enough.
package cli

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/demo/services"
)

// New returns the root command.
func New() *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis",
		Short: "Trellis: a service mesh — reliability, observability and security for every service",
		Long: `trellis is the Trellis command line.

Local mode meshes plain processes on this machine: 'trellis up' starts the
control plane, 'trellis run' starts an application with its proxy, and
'trellis demo' does all of it with a sample application.

Commands that talk to a local control plane find it through its data
directory: --data-dir, else $TRELLIS_DATA_DIR, else /var/lib/trellis (root)
or ~/.trellis.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	dataDir := root.PersistentFlags().String("data-dir", localapi.DataDir(), "the local control plane's data directory")
	kube := &kubeFlags{}
	kube.bind(root)
	t := &target{dataDir: dataDir, kube: kube}
	root.AddGroup(&cobra.Group{ID: "local", Title: "Local mode:"}, &cobra.Group{ID: "resources", Title: "Resources:"},
		&cobra.Group{ID: "observe", Title: "Observability:"}, &cobra.Group{ID: "kubernetes", Title: "Kubernetes:"})
	for _, c := range []*cobra.Command{upCmd(), downCmd(dataDir), statusCmd(dataDir), runCmd(dataDir), demoCmd()} {
		c.GroupID = "local"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{applyCmd(dataDir), getCmd(t), deleteCmd(dataDir), authzCmd(t)} {
		c.GroupID = "resources"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{statCmd(t), routesCmd(t), edgesCmd(t), topCmd(t), tapCmd(t), explainCmd(t), dashboardCmd(t), diagnosticsCmd(t), prometheusConfigCmd(dataDir)} {
		c.GroupID = "observe"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{installCmd(), checkCmd(kube), upgradeCmd(kube), uninstallCmd(), injectCmd(), uninjectCmd()} {
		c.GroupID = "kubernetes"
		root.AddCommand(c)
	}
	root.AddCommand(buildinfo.Command(), services.Command())
	return root
}

func textLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
