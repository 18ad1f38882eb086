package cli

import (
	encpem "encoding/pem"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/kube/inject"
)

// injectCmd is `trellis inject`: the injector's patch applied to manifests
// on disk, for GitOps pipelines and clusters without the webhook.
func injectCmd() *cobra.Command {
	c := inject.Config{Version: buildinfo.String(), ImagePullPolicy: corev1.PullIfNotPresent}
	var anchors, controlNS string
	cmd := &cobra.Command{
		Use:   "inject FILE|- ...",
		Short: "Add the Trellis proxy to the Pods of Kubernetes manifests",
		Long: `inject adds the Trellis proxy to every Pod and Pod template (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, List items) in the given
manifests and prints them; other documents are printed unchanged. It is the
same patch the injector webhook applies: an iptables init container
(trellis-init, NET_ADMIN and NET_RAW only) and the proxy as a native
sidecar (UID 2102, read-only root filesystem, no capabilities), tuned by
config.trellis.dev/* annotations. Pods that have the proxy are left alone.

  trellis inject deploy.yaml --trust-anchors ca.crt | kubectl apply -f -`,
		Example: "  trellis inject app.yaml --trust-anchors ca.crt > app.meshed.yaml",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if anchors == "" {
				return fmt.Errorf("--trust-anchors is required: the PEM file of the mesh's trust anchors (the ca.crt of 'trellis install')")
			}
			pem, err := os.ReadFile(anchors)
			if err != nil {
				return fmt.Errorf("--trust-anchors: %w", err)
			}
			if b, _ := encpem.Decode(pem); b == nil || b.Type != "CERTIFICATE" {
				return fmt.Errorf("--trust-anchors %s: no PEM certificate in it", anchors)
			}
			c.TrustAnchorsPEM = string(pem)
			c.IdentityAddr = "trellis-identity." + controlNS + ".svc." + c.ClusterDomain + ":8080"
			c.DestinationAddr = "trellis-destination." + controlNS + ".svc." + c.ClusterDomain + ":8086"
			if err := c.Validate(); err != nil {
				return err
			}
			return eachManifest(cmd, args, c.Patch)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.ProxyImage, "proxy-image", "localhost/trellis-proxy:"+buildinfo.String(), "image of the proxy and its init container")
	f.StringVar(&anchors, "trust-anchors", "", "PEM file of the mesh's trust anchors (required)")
	f.StringVar(&c.TrustDomain, "trust-domain", "cluster.local", "the mesh's trust domain")
	f.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.StringVar(&controlNS, "control-plane-namespace", "trellis", "namespace of the Trellis control plane")
	f.StringVar(&c.LogLevel, "proxy-log-level", "info", "the proxies' log level (a Pod's config.trellis.dev/proxy-log-level wins)")
	return cmd
}

// uninjectCmd is `trellis uninject`: what inject added, removed.
func uninjectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "uninject FILE|- ...",
		Short: "Remove the Trellis proxy from the Pods of Kubernetes manifests",
		Long: `uninject removes from every Pod and Pod template in the given manifests what
'trellis inject' or the injector webhook added, and prints them.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachManifest(cmd, args, func(p *corev1.Pod) ([]inject.Op, error) { return inject.UninjectPatch(p), nil })
		},
	}
}

// eachManifest runs change over each file ('-' is standard input) and
// reports the count on standard error.
func eachManifest(cmd *cobra.Command, files []string, change func(*corev1.Pod) ([]inject.Op, error)) error {
	var total inject.Result
	for i, name := range files {
		var in io.Reader = cmd.InOrStdin()
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		if i > 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "---")
		}
		res, err := inject.Manifests(in, cmd.OutOrStdout(), change)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		total.Changed += res.Changed
		total.Unchanged += res.Unchanged
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d Pod template(s) changed, %d left as they were\n", total.Changed, total.Unchanged)
	return nil
}
