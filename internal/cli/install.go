package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/strvals"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/charts"
	"github.com/trellis-mesh/trellis/internal/buildinfo"
	"github.com/trellis-mesh/trellis/internal/kube/auth"
	"github.com/trellis-mesh/trellis/internal/kube/install"
)

// kubeFlags are how a command reaches a cluster, as kubectl's.
type kubeFlags struct{ kubeconfig, context string }

// bind makes them flags of every command (install, check and upgrade use
// them; the commands that read the mesh switch to the cluster with them).
func (k *kubeFlags) bind(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&k.kubeconfig, "kubeconfig", "", "Kubernetes: kubeconfig file (default $KUBECONFIG, else ~/.kube/config); stat, routes, edges, top, tap, get and diagnostics then read the cluster's mesh")
	cmd.PersistentFlags().StringVar(&k.context, "context", "", "Kubernetes: kubeconfig context (default the current one); as --kubeconfig")
}

// set reports whether either was given: the cluster, not the local mesh.
func (k *kubeFlags) set() bool { return k.kubeconfig != "" || k.context != "" }

func (k *kubeFlags) client() (kubernetes.Interface, error) {
	cfg, err := auth.UserConfig(k.kubeconfig, k.context)
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "trellis/" + buildinfo.String()
	return kubernetes.NewForConfig(cfg)
}

// renderFlags are install's and upgrade's: the control plane's values.
type renderFlags struct {
	o       install.Options
	crds    bool
	noGWAPI bool
	sets    []string
	files   []string
}

func (r *renderFlags) bind(cmd *cobra.Command, withIdentity bool) {
	f := cmd.Flags()
	f.BoolVar(&r.crds, "crds", false, "print the CRDs instead (Gateway API HTTPRoute and GRPCRoute): apply them first")
	f.BoolVar(&r.noGWAPI, "skip-gateway-api", false, "with --crds: leave out the Gateway API CRDs (the cluster has its own)")
	f.StringVar(&r.o.Registry, "registry", "localhost", "registry of the images: <registry>/trellis-control and <registry>/trellis-proxy")
	f.StringVar(&r.o.Version, "image-version", buildinfo.String(), "tag of the images")
	f.StringVar(&r.o.PullPolicy, "image-pull-policy", "IfNotPresent", "pull policy of the control plane's and the proxies' images")
	f.BoolVar(&r.o.HA, "ha", false, "high availability: 3 replicas of each component, PodDisruptionBudgets, anti-affinity")
	f.StringVar(&r.o.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh's identities")
	f.StringVar(&r.o.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.BoolVar(&r.o.Prometheus, "prometheus", false,
		"deploy a Prometheus (trellis/trellis-prometheus) scraping every proxy, for stat, routes and edges (default: the destination service's embedded store)")
	f.StringVar(&r.o.PrometheusURL, "prometheus-url", "",
		"query your own Prometheus instead (it must scrape the proxies with the job in the ConfigMap trellis-prometheus-config of --prometheus)")
	if withIdentity {
		f.StringVar(&r.o.TrustAnchorsFile, "identity-trust-anchors-file", "", "PEM trust anchor(s) (default: generate an anchor)")
		f.StringVar(&r.o.IssuerCertFile, "identity-issuer-certificate-file", "", "PEM issuer certificate, signed by the trust anchor (default: generate)")
		f.StringVar(&r.o.IssuerKeyFile, "identity-issuer-key-file", "", "PEM private key of the issuer")
		f.BoolVar(&r.o.ExternalIssuer, "identity-external-issuer", false,
			"the Secret trellis/trellis-identity-issuer (ca.crt, tls.crt, tls.key) is managed by you or cert-manager; needs --identity-trust-anchors-file")
	}
	f.StringArrayVar(&r.sets, "set", nil, "set a chart value (key=value, as helm's --set; repeatable)")
	f.StringArrayVarP(&r.files, "values", "f", nil, "chart values from a YAML file (as helm's -f; repeatable)")
}

// overrides are the values of -f and --set, in that order.
func (r *renderFlags) overrides() (map[string]any, error) {
	vals := map[string]any{}
	for _, name := range r.files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		install.Merge(vals, v)
	}
	for _, s := range r.sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	return vals, nil
}

// render prints the CRDs or the control plane.
func (r *renderFlags) render(cmd *cobra.Command) error {
	overrides, err := r.overrides()
	if err != nil {
		return err
	}
	var out string
	if r.crds {
		out, err = install.Render(charts.CRDs, install.Merge(map[string]any{"installGatewayAPI": !r.noGWAPI}, overrides))
	} else {
		r.o.Overrides = overrides
		var vals map[string]any
		if vals, err = r.o.Values(time.Now()); err == nil {
			out, err = install.Render(charts.ControlPlane, vals)
		}
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(cmd.OutOrStdout(), out)
	return err
}

func installCmd() *cobra.Command {
	var r renderFlags
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print the manifests that install Trellis into a Kubernetes cluster",
		Long: `install prints the Kubernetes manifests of Trellis, to pipe to kubectl:

  trellis install --crds | kubectl apply -f -   # first: the CRDs
  trellis install | kubectl apply -f -          # then: the control plane
  trellis check                                 # wait until it is ready

The control plane runs in namespace trellis: the identity service (the
mesh's certificate authority, checking proxies' ServiceAccount tokens with
TokenReviews), the destination service (discovery, mirroring Services,
EndpointSlices and Pods) and the proxy injector (a mutating admission
webhook that meshes Pods of namespaces or Pods annotated
trellis.dev/inject: enabled). Every component runs as a non-root user on a
read-only root filesystem with no capabilities, with readiness and liveness
probes; --ha gives each 3 replicas, a PodDisruptionBudget and anti-affinity.

A trust anchor and an issuer (ECDSA P-256, one year) are generated unless
you give yours (--identity-*-file), or leave the issuer's Secret to
cert-manager (--identity-external-issuer). Keep the trust anchor: every
later 'trellis upgrade' reuses what the cluster holds.

stat, routes and edges read the proxies' metrics from the destination
service's embedded store by default; --prometheus deploys a Prometheus
that scrapes them instead (longer history, your dashboards can read it),
and --prometheus-url uses one of yours.

The webhook's failurePolicy is Ignore: when the injector cannot be reached,
Pods are created without the proxy rather than refused, so an injector
outage never blocks the cluster; 'trellis check --proxy' lists them. Set
--set injector.failurePolicy=Fail to refuse them instead.

The manifests are the Helm charts in the repository's charts/ directory,
rendered with Helm's engine: 'helm install' of those charts with the same
values gives the same objects.`,
		Example: `  # images pushed to your registry (see go run ./build/images -help)
  trellis install --registry ghcr.io/me --image-version v0.1.0 | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return r.render(cmd) },
	}
	r.bind(cmd, true)
	return cmd
}

func upgradeCmd(k *kubeFlags) *cobra.Command {
	var r renderFlags
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Print the manifests that upgrade the Trellis control plane in a cluster",
		Long: `upgrade prints the control plane's manifests for this CLI's version, keeping
the trust anchors, the issuer and the webhook certificate the cluster
holds, so meshed Pods keep trusting the new control plane:

  trellis upgrade --crds | kubectl apply -f -
  trellis upgrade | kubectl apply -f -

Give the same flags as at install (e.g. --ha). Proxies of running Pods keep
their version until the Pods restart (kubectl rollout restart).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r.crds {
				return r.render(cmd)
			}
			client, err := k.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if r.o.Identity, r.o.Webhook, r.o.ExternalIssuer, err = installed(ctx, client); err != nil {
				return err
			}
			return r.render(cmd)
		},
	}
	r.bind(cmd, false)
	return cmd
}

// installed reads the certificates an installed control plane holds.
func installed(ctx context.Context, client kubernetes.Interface) (*install.Identity, *install.Webhook, bool, error) {
	ns := install.Namespace
	cm, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "trellis-trust-anchors", metav1.GetOptions{})
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the installed trust anchors (is Trellis installed?): %w", err)
	}
	id := &install.Identity{AnchorsPEM: cm.Data["ca.crt"]}
	issuer, err := client.CoreV1().Secrets(ns).Get(ctx, "trellis-identity-issuer", metav1.GetOptions{})
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the installed issuer: %w", err)
	}
	// An issuer Secret the chart did not write belongs to its owner.
	external := issuer.Labels["app.kubernetes.io/part-of"] != "trellis"
	if !external {
		id.IssuerCertPEM, id.IssuerKeyPEM = string(issuer.Data["tls.crt"]), string(issuer.Data["tls.key"])
	}
	tls, err := client.CoreV1().Secrets(ns).Get(ctx, "trellis-injector-tls", metav1.GetOptions{})
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the injector's certificate: %w", err)
	}
	wh, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "trellis-proxy-injector-"+ns, metav1.GetOptions{})
	if err != nil || len(wh.Webhooks) == 0 {
		return nil, nil, false, fmt.Errorf("reading the injector's webhook configuration: %v", err)
	}
	return id, &install.Webhook{CAPEM: string(wh.Webhooks[0].ClientConfig.CABundle), CertPEM: string(tls.Data["tls.crt"]),
		KeyPEM: string(tls.Data["tls.key"])}, external, nil
}

func uninstallCmd() *cobra.Command {
	var crds bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Print the objects of the Trellis control plane, to pipe to kubectl delete",
		Long: `uninstall prints every object 'trellis install' creates (and with --crds, the
CRDs too), by kind and name only — with the optional ones (--prometheus),
hence --ignore-not-found:

  trellis uninstall | kubectl delete --ignore-not-found -f -

Meshed Pods keep their proxies until they restart; without the control
plane those proxies cannot renew certificates or learn endpoints. Remove
the trellis.dev/inject annotations and restart the workloads first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var o install.Options
			o.TrustDomain, o.Registry, o.Version = "cluster.local", "localhost", buildinfo.String()
			o.Prometheus = true // the optional objects too
			vals, err := o.Values(time.Now())
			if err != nil {
				return err
			}
			out, err := install.Render(charts.ControlPlane, vals)
			if err != nil {
				return err
			}
			if crds {
				c, err := install.Render(charts.CRDs, map[string]any{"installGatewayAPI": true})
				if err != nil {
					return err
				}
				out += c
			}
			return printHeads(cmd, out)
		},
	}
	cmd.Flags().BoolVar(&crds, "crds", false, "also the CRDs (Gateway API HTTPRoute and GRPCRoute: only if nothing else uses them)")
	return cmd
}

// printHeads prints each object of manifests by apiVersion, kind and name.
func printHeads(cmd *cobra.Command, manifests string) error {
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace,omitempty"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return err
		}
		if obj.Kind == "" {
			continue
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "---\n%s", b)
	}
	return nil
}
