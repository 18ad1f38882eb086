package install

import (
	"fmt"
	"io/fs"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"

	"github.com/trellis-mesh/trellis/charts"
)

// Namespace is where the control plane runs: proxies verify it as
// spiffe://<trust-domain>/ns/trellis/sa/...
const Namespace = "trellis"

// ViewPort is where the destination service serves its read-only API on
// its Pod's loopback (--view-addr in the chart), for the CLI's
// port-forward.
const ViewPort = 8085

// Load reads the embedded chart name (charts.CRDs or charts.ControlPlane).
func Load(name string) (*chart.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(charts.FS, name, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(charts.FS, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(p, name+"/"), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	return loader.LoadFiles(files)
}

// Render renders chart name with values as `helm template` does (release
// name = the chart's name, namespace trellis): every manifest in Helm's
// install order, each after a "# Source:" line naming its template.
func Render(name string, values map[string]any) (string, error) {
	c, err := Load(name)
	if err != nil {
		return "", err
	}
	vals, err := chartutil.ToRenderValues(c, values, common.ReleaseOptions{Name: name, Namespace: Namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return "", fmt.Errorf("chart %s: %w", name, err)
	}
	files, err := engine.Render(c, vals)
	if err != nil {
		return "", fmt.Errorf("chart %s: %w", name, err)
	}
	_, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return "", fmt.Errorf("chart %s: %w", name, err)
	}
	var b strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	return b.String(), nil
}
