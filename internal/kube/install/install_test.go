package install

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	release "helm.sh/helm/v4/pkg/release/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/charts"
)

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// options are `trellis install`'s defaults with the hierarchy and the
// webhook certificate from testdata, so that renders are reproducible.
func options(t *testing.T) Options {
	return Options{Version: "v1.2.3", Registry: "localhost", PullPolicy: "IfNotPresent", TrustDomain: "cluster.local", ClusterDomain: "cluster.local",
		TrustAnchorsFile: "testdata/trust-anchors.pem", IssuerCertFile: "testdata/issuer.pem", IssuerKeyFile: "testdata/issuer-key.pem",
		Webhook: &Webhook{CAPEM: testdata(t, "webhook-ca.pem"), CertPEM: testdata(t, "webhook.pem"), KeyPEM: testdata(t, "webhook-key.pem")}}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := testdata(t, name); got != want {
		t.Errorf("rendered manifests differ from %s (go test ./internal/kube/install -update to accept):\n%s", path, firstDiff(want, got))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, wl, gl)
		}
	}
	return ""
}

func TestControlPlaneManifests(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Options)
	}{
		{"control-plane.golden.yaml", func(*Options) {}},
		{"control-plane-ha.golden.yaml", func(o *Options) { o.HA = true }},
		{"control-plane-prometheus.golden.yaml", func(o *Options) { o.Prometheus = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options(t)
			tc.set(&o)
			vals, err := o.Values(time.Now())
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(charts.ControlPlane, vals)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, out)
			checkDocuments(t, out)
		})
	}
}

// checkDocuments checks that every rendered document is a Kubernetes
// object: apiVersion, kind and a name, namespaced into trellis unless it
// is cluster-scoped.
func checkDocuments(t *testing.T, manifests string) {
	t.Helper()
	clusterScoped := map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
		"MutatingWebhookConfiguration": true, "CustomResourceDefinition": true}
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("a document is not YAML: %v\n%s", err, doc)
		}
		if obj.APIVersion == "" || obj.Kind == "" || obj.Metadata.Name == "" {
			t.Errorf("a document is not an object:\n%s", doc)
		}
		if ns := obj.Metadata.Namespace; clusterScoped[obj.Kind] != (ns == "") || (ns != "" && ns != Namespace) {
			t.Errorf("%s %s in namespace %q", obj.Kind, obj.Metadata.Name, ns)
		}
	}
}

// `helm template` (Helm's own install action, client-only) renders the
// same manifests from the same values as Render, for both charts: the CLI
// and the chart are one route.
func TestRenderIsHelmTemplate(t *testing.T) {
	o := options(t)
	vals, err := o.Values(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		chart  string
		values map[string]any
	}{{charts.CRDs, nil}, {charts.ControlPlane, vals}} {
		ours, err := Render(tc.chart, tc.values)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Load(tc.chart)
		if err != nil {
			t.Fatal(err)
		}
		install := action.NewInstall(&action.Configuration{})
		install.DryRunStrategy, install.ReleaseName, install.Namespace = action.DryRunClient, tc.chart, Namespace
		install.Replace = true
		rel, err := install.Run(c, tc.values)
		if err != nil {
			t.Fatalf("helm template %s: %v", tc.chart, err)
		}
		if got := rel.(*release.Release).Manifest; strings.TrimSpace(got) != strings.TrimSpace(ours) {
			t.Errorf("helm template %s differs from trellis install's:\n%s", tc.chart, firstDiff(got, ours))
		}
	}
}

// --prometheus-url points the destination service at the user's
// Prometheus; it must be a URL, and not given with --prometheus.
func TestPrometheusURL(t *testing.T) {
	o := options(t)
	o.PrometheusURL = "http://prometheus.monitoring.svc:9090"
	vals, err := o.Values(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(charts.ControlPlane, vals)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "- --prometheus-url=http://prometheus.monitoring.svc:9090\n") || strings.Contains(out, "trellis-prometheus") {
		t.Errorf("the destination service does not query the given Prometheus, or one is deployed:\n%s", out)
	}
	for _, bad := range []struct {
		prometheus bool
		url, want  string
	}{{true, "http://p:9090", "give one of them"}, {false, "prometheus:9090", "not an http:// or https:// URL"}} {
		o.Prometheus, o.PrometheusURL = bad.prometheus, bad.url
		if _, err := o.Values(time.Now()); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("--prometheus=%v --prometheus-url=%s: %v, want an error saying %q", bad.prometheus, bad.url, err, bad.want)
		}
	}
}

// The chart refuses to render without the trust anchors, and outside
// namespace trellis, saying why.
func TestControlPlaneChartRefusesMissingValues(t *testing.T) {
	if _, err := Render(charts.ControlPlane, nil); err == nil || !strings.Contains(err.Error(), "identity.trustAnchorsPEM is required") {
		t.Errorf("no trust anchors: %v", err)
	}
}
