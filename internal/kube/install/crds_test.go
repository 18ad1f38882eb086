package install

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files and the Gateway API CRDs from the module")

// gatewayAPIRoutes are the Gateway API kinds Trellis reads.
var gatewayAPIRoutes = []string{"httproutes", "grpcroutes"}

// The Gateway API CRDs in the trellis-crds chart are the standard channel's
// of the module go.mod requires, with their descriptions removed: the
// HTTPRoute CRD is over 400 KB with them, beyond what `kubectl apply`
// (client-side, as `trellis install --crds | kubectl apply -f -` is) can
// keep in its last-applied annotation. -update regenerates them.
func TestGatewayAPICRDsAreTheModules(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locating the gateway-api module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	for _, kind := range gatewayAPIRoutes {
		src, err := os.ReadFile(filepath.Join(dir, "gateway.networking.k8s.io_"+kind+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := chartCRD(src)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "..", "..", "charts", "trellis-crds", "templates", "gateway-api-"+kind+".yaml")
		if *update {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the module's CRD; run go test ./internal/kube/install -update", path)
		}
		if len(got) > 256<<10 {
			t.Errorf("%s is %d bytes: too big for a client-side kubectl apply", path, len(got))
		}
	}
}

// chartCRD is a CRD without its schema's descriptions, as a template
// rendered when installGatewayAPI is set.
func chartCRD(src []byte) ([]byte, error) {
	var crd map[string]any
	if err := yaml.Unmarshal(src, &crd); err != nil {
		return nil, err
	}
	stripDescriptions(crd)
	b, err := yaml.Marshal(crd)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(b, []byte("{{")) {
		return nil, fmt.Errorf("the CRD holds template delimiters")
	}
	return append(append([]byte("{{- if .Values.installGatewayAPI }}\n"), b...), "{{- end }}\n"...), nil
}

// stripDescriptions removes every string-valued "description" key (a
// schema's documentation; a property named description is an object).
func stripDescriptions(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if _, ok := x.(string); ok && k == "description" {
				delete(v, k)
				continue
			}
			stripDescriptions(x)
		}
	case []any:
		for _, x := range v {
			stripDescriptions(x)
		}
	}
}
