package cli

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// documents splits rendered manifests into objects.
func documents(t *testing.T, out string) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for _, d := range strings.Split(out, "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(d), &obj); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, d)
		}
		if obj != nil {
			docs = append(docs, obj)
		}
	}
	return docs
}

// `trellis install` generates a valid hierarchy: the issuer in its Secret
// is signed by the anchor in the ConfigMap proxies are given.
func TestInstallGeneratesAHierarchy(t *testing.T) {
	out, err := execute("install")
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	var anchors, issuer, key []byte
	for _, obj := range documents(t, out) {
		meta, _ := obj["metadata"].(map[string]any)
		switch meta["name"] {
		case "trellis-trust-anchors":
			anchors = []byte(obj["data"].(map[string]any)["ca.crt"].(string))
		case "trellis-identity-issuer":
			data := obj["data"].(map[string]any)
			issuer, _ = base64.StdEncoding.DecodeString(data["tls.crt"].(string))
			key, _ = base64.StdEncoding.DecodeString(data["tls.key"].(string))
		}
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.crt": anchors, "issuer.crt": issuer, "issuer.key": key}
	for name, b := range files {
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	ca, err := pki.LoadFiles(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "issuer.crt"), filepath.Join(dir, "issuer.key"), time.Now())
	if err != nil {
		t.Fatalf("the generated hierarchy: %v", err)
	}
	if left := time.Until(ca.NotAfter()); left < 364*24*time.Hour {
		t.Errorf("the generated hierarchy expires in %v", left)
	}
	// Two installs generate two hierarchies: an upgrade must not re-run install.
	again, _ := execute("install")
	if strings.Contains(again, string(anchors)) {
		t.Error("two installs rendered the same trust anchor")
	}
}

func TestInstallFlags(t *testing.T) {
	values := filepath.Join(t.TempDir(), "values.yaml")
	os.WriteFile(values, []byte("proxy: {logLevel: debug}\n"), 0o644)
	out, err := execute("install", "--ha", "--registry", "registry.test/me", "--image-version", "v9.9.9",
		"--set", "injector.failurePolicy=Fail", "-f", values)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	for _, want := range []string{"image: registry.test/me/trellis-control:v9.9.9", "--proxy-image=registry.test/me/trellis-proxy:v9.9.9",
		"failurePolicy: Fail", "replicas: 3", "kind: PodDisruptionBudget", "podAntiAffinity", "--proxy-log-level=debug"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q", want)
		}
	}
	crds, err := execute("install", "--crds")
	if err != nil || !strings.Contains(crds, "name: httproutes.gateway.networking.k8s.io") || !strings.Contains(crds, "name: grpcroutes.gateway.networking.k8s.io") {
		t.Errorf("install --crds: %v", err)
	}
	if none, err := execute("install", "--crds", "--skip-gateway-api"); err != nil || strings.Contains(none, "gateway.networking.k8s.io") {
		t.Errorf("install --crds --skip-gateway-api: %v\n%s", err, none)
	}
}

func TestInstallRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--identity-external-issuer"}, "--identity-trust-anchors-file"},
		{[]string{"install", "--identity-trust-anchors-file", garbage}, "--identity-issuer-key-file"},
		{[]string{"install", "--identity-trust-anchors-file", garbage, "--identity-external-issuer"}, garbage},
		{[]string{"install", "--set", "novalue"}, "--set novalue"},
		{[]string{"install", "-f", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"install", "extra"}, "unknown command"},
	} {
		_, err := execute(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v; want one mentioning %q", tc.args, err, tc.want)
		}
	}
}

// uninstall prints every installed object by kind and name only: no
// secrets.
func TestUninstallPrintsObjectsOnly(t *testing.T) {
	out, err := execute("uninstall", "--crds")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, obj := range documents(t, out) {
		if _, ok := obj["data"]; ok {
			t.Errorf("uninstall printed data: %v", obj["metadata"])
		}
		kinds[obj["kind"].(string)]++
	}
	for _, k := range []string{"Namespace", "Deployment", "MutatingWebhookConfiguration", "CustomResourceDefinition", "ClusterRole"} {
		if kinds[k] == 0 {
			t.Errorf("uninstall lacks a %s: %v", k, kinds)
		}
	}
}
