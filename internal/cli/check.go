package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/kube/auth"
	"github.com/trellis-mesh/trellis/internal/kube/check"
)

func checkCmd(k *kubeFlags) *cobra.Command {
	var pre, proxy bool
	var wait time.Duration
	env := check.Env{Version: buildinfo.String(), Now: time.Now}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that Trellis is installed and working in a Kubernetes cluster",
		Long: `check runs a list of checks against the cluster of the kubeconfig and prints
each as ✔ (passed), × (failed, with why and what to do) or ‼ (a warning),
by category; it exits non-zero when a check fails.

  trellis check --pre     before installing: the API answers, Kubernetes is
                          recent enough, you may create what install creates
  trellis check           after: the CRDs, the control plane's Deployments,
                          the trust anchors and issuer (valid, signed, not
                          expiring within --expiry-warning), the webhook's
                          certificate and a dry-run Pod the injector meshes
  trellis check --proxy   also every meshed Pod's proxy: ready, and on the
                          CLI's version

Checks that pass once the cluster settles (a rollout, CRDs registering)
are retried until --wait runs out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env.Config = func() (*rest.Config, error) { return auth.UserConfig(k.kubeconfig, k.context) }
			checks := env.KubernetesAPI()
			if pre {
				checks = append(checks, env.Pre()...)
			} else {
				checks = append(append(append(append(checks, env.CRDs()...), env.ControlPlane()...), env.Identity()...), env.Injector()...)
				if proxy {
					checks = append(checks, env.Proxies()...)
				}
			}
			r := check.Runner{Out: cmd.OutOrStdout(), Progress: cmd.ErrOrStderr(), Wait: wait}
			if !r.Run(cmd.Context(), checks) {
				return fmt.Errorf("some checks failed")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&pre, "pre", false, "check that Trellis can be installed, instead")
	f.BoolVar(&proxy, "proxy", false, "also check every meshed Pod's proxy")
	f.StringVarP(&env.ProxyNamespace, "namespace", "n", "", "with --proxy: only this namespace's Pods (default all)")
	f.DurationVar(&wait, "wait", 5*time.Minute, "how long to retry checks that may pass once the cluster settles")
	f.DurationVar(&env.ExpiryWarning, "expiry-warning", 60*24*time.Hour, "fail certificates that expire within this long")
	return cmd
}
