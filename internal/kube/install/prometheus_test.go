package install

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // kubernetes_sd_configs
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/charts"
)

// The scrape job that --prometheus deploys is a valid Prometheus
// configuration, and it labels each proxy's samples as the metrics API's
// queries expect — the same labels the embedded store gives them.
func TestPrometheusScrapeJob(t *testing.T) {
	o := options(t)
	o.Prometheus = true
	vals, err := o.Values(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(charts.ControlPlane, vals)
	if err != nil {
		t.Fatal(err)
	}
	var promYAML string
	for _, doc := range strings.Split(out, "\n---\n") {
		var cm struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
		}
		if yaml.Unmarshal([]byte(doc), &cm) == nil && cm.Kind == "ConfigMap" && cm.Metadata.Name == "trellis-prometheus-config" {
			promYAML = cm.Data["prometheus.yml"]
		}
	}
	cfg, err := config.Load(promYAML, nil)
	if err != nil {
		t.Fatalf("prometheus.yml does not load: %v\n%s", err, promYAML)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "trellis-proxy" {
		t.Fatalf("scrape jobs: %+v", cfg.ScrapeConfigs)
	}
	rules := cfg.ScrapeConfigs[0].RelabelConfigs
	pod := func(container, port, kind, controller string) labels.Labels {
		return labels.FromMap(map[string]string{
			"__address__": "10.88.0.7:4191", "__meta_kubernetes_namespace": "shop", "__meta_kubernetes_service_name": "web",
			"__meta_kubernetes_pod_name": "web-7d9c5b6f4-x2x9q", "__meta_kubernetes_pod_label_pod_template_hash": "7d9c5b6f4",
			"__meta_kubernetes_pod_container_name": container, "__meta_kubernetes_pod_container_port_name": port,
			"__meta_kubernetes_pod_controller_kind": kind, "__meta_kubernetes_pod_controller_name": controller,
		})
	}
	for _, tc := range []struct {
		name   string
		target labels.Labels
		want   map[string]string // nil: dropped
	}{
		{"a Deployment's Pod", pod("trellis-proxy", "trellis-admin", "ReplicaSet", "web-7d9c5b6f4"),
			map[string]string{"namespace": "shop", "service": "web", "workload": "web", "pod": "web-7d9c5b6f4-x2x9q.web"}},
		{"a StatefulSet's Pod", pod("trellis-proxy", "trellis-admin", "StatefulSet", "db"),
			map[string]string{"namespace": "shop", "service": "web", "workload": "db", "pod": "web-7d9c5b6f4-x2x9q.web"}},
		{"a bare Pod", pod("trellis-proxy", "trellis-admin", "", ""),
			map[string]string{"namespace": "shop", "service": "web", "workload": "web-7d9c5b6f4-x2x9q", "pod": "web-7d9c5b6f4-x2x9q.web"}},
		{"the proxy's inbound port", pod("trellis-proxy", "trellis-proxy", "ReplicaSet", "web-7d9c5b6f4"), nil},
		{"the application's port", pod("app", "http", "ReplicaSet", "web-7d9c5b6f4"), nil},
	} {
		b := labels.NewBuilder(tc.target)
		keep := relabel.ProcessBuilder(b, rules...)
		got := b.Labels()
		if keep != (tc.want != nil) {
			t.Errorf("%s: kept %v, want %v", tc.name, keep, tc.want != nil)
			continue
		}
		for k, v := range tc.want {
			if got.Get(k) != v {
				t.Errorf("%s: %s=%q, want %q (all: %s)", tc.name, k, got.Get(k), v, got)
			}
		}
	}
}
